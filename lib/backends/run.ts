/**
 * The run every backend hands to BaseBackend: a producer (the engine side) pushes generated
 * tokens into a small buffer, the consumer (BaseBackend's driver) takes everything buffered at
 * once. Iteration ends only after the producer has stopped, so the next request never races a
 * still-running evaluation.
 */
import type { EngineLogprob, TokenBatch } from "../logprobs.js";
import type { TokenRun } from "./base.js";

/**
 * Generated tokens the engine may run ahead of a slow consumer. Decoding the next token while
 * the previous one is detokenized overlaps the JS work with the native work; the bound keeps a
 * stalled consumer from wasting compute (for producers that wait for {@link EngineRun.room}).
 */
export const READ_AHEAD_TOKENS = 8;

/** The engine side of a run: pushes tokens, sets `finish` and `evaluatedPromptTokens`, resolves when the engine is done with the model. */
export type Producer = (run: EngineRun) => Promise<void>;

/** A generation in flight; see the module comment. */
export class EngineRun implements TokenRun {
  evaluatedPromptTokens = 0;
  finish: "stop" | "length" | undefined;
  cancelled = false;
  /** Settles when the producer has stopped; never rejects (errors are kept for the consumer). */
  readonly completion: Promise<void>;
  private buffer: number[] = [];
  /** The buffered tokens' logprobs, when the producer reports them (one entry per token). */
  private logprobs: EngineLogprob[] | undefined;
  private ended = false;
  private wakeScheduled = false;
  private failure: { error: unknown } | undefined;
  private wakeConsumer: (() => void) | undefined;
  private wakeProducer: (() => void) | undefined;
  private readonly cancelHooks: (() => void)[] = [];

  /**
   * @param producer the engine side; started at once.
   * @param toError turns what the producer threw into the error the consumer gets.
   */
  constructor(producer: Producer, toError: (error: unknown) => unknown = (error) => error) {
    // Started now (a producer that throws at once fails the run, as one that rejects later).
    this.completion = new Promise<void>((resolve) => resolve(producer(this))).then(
      () => this.end(),
      (error: unknown) => {
        this.failure = { error: toError(error) };
        this.end();
      },
    );
  }

  /** Asks the producer to stop (it sees `cancelled`, and the hooks of {@link onCancel} run). Safe to call more than once. */
  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    for (const hook of this.cancelHooks.splice(0)) hook();
    this.notify();
  }

  /** Runs `hook` when the run is cancelled (at once if it already is): for engines stopped by a call, not a flag. */
  onCancel(hook: () => void): void {
    if (this.cancelled) hook();
    else this.cancelHooks.push(hook);
  }

  /**
   * Called by the producer with generated tokens (and their logprobs, one entry per token, when the
   * request asked for them). With `deferWake`, the consumer is woken on the next macrotask (after the
   * engine has started its next native decode) instead of now.
   */
  push(tokens: readonly number[], deferWake = false, logprobs?: readonly EngineLogprob[]): void {
    if (this.ended) return;
    this.buffer.push(...tokens);
    if (logprobs) (this.logprobs ??= []).push(...logprobs);
    if (!deferWake) this.notify();
    else if (!this.wakeScheduled) {
      this.wakeScheduled = true;
      setImmediate(() => {
        this.wakeScheduled = false;
        this.notify();
      });
    }
  }

  /** True while the consumer is fewer than READ_AHEAD_TOKENS tokens behind. */
  hasRoom(): boolean {
    return this.buffer.length < READ_AHEAD_TOKENS;
  }

  /** Resolves when the consumer has room for more tokens (or the run was cancelled). */
  room(): Promise<void> {
    if (this.hasRoom() || this.cancelled) return Promise.resolve();
    return new Promise((r) => (this.wakeProducer = r));
  }

  async *[Symbol.asyncIterator](): AsyncIterator<TokenBatch> {
    try {
      while (!this.cancelled) {
        if (this.buffer.length > 0) {
          const batch: TokenBatch = { ids: this.buffer };
          this.buffer = [];
          if (this.logprobs) {
            batch.logprobs = this.logprobs;
            this.logprobs = [];
          }
          this.takeWake("producer");
          yield batch;
          continue;
        }
        if (this.failure) throw this.failure.error;
        if (this.ended) return;
        await new Promise<void>((r) => (this.wakeConsumer = r));
      }
    } finally {
      // The consumer left (done, stop string, maxTokens, abort): stop the engine and wait for it.
      this.cancel();
      await this.completion;
    }
  }

  private end(): void {
    this.ended = true;
    this.notify();
  }

  private notify(): void {
    this.takeWake("consumer");
    if (this.cancelled) this.takeWake("producer");
  }

  private takeWake(which: "consumer" | "producer"): void {
    const wake = which === "consumer" ? this.wakeConsumer : this.wakeProducer;
    if (which === "consumer") this.wakeConsumer = undefined;
    else this.wakeProducer = undefined;
    wake?.();
  }
}
