/**
 * Follows one constrained generation token by token: the automaton state, the budget, and the
 * mask (or ban list) for the next token. Backends feed it the tokens their engine produced.
 *
 * A constraint with a `trigger` (a tool call in "auto" mode) is lazy: generation is free until
 * the output ends with the trigger text, then the automaton takes over until its document is
 * complete, then generation is free again (another call may follow). A call that starts with too
 * little budget left to finish is not constrained (the answer then comes back as text).
 */
import { InvalidOptionError } from "../errors.js";
import { REJECT, type StateId } from "./automaton.js";
import type { TokenConstraint } from "./token-constraint.js";

/** The per-request side of a {@link TokenConstraint}. */
export class JsonGenerationDriver {
  readonly constraint: TokenConstraint;
  /** Tokens this request may generate in all (maxTokens, or less when the context is nearly full). */
  readonly budget: number;
  private current: StateId;
  private generated = 0;
  /** Milliseconds spent computing masks (for benchmarks). */
  maskMs = 0;
  /**
   * True once the budget left no slack: every later token had to shorten the completion, so
   * the document was closed by the budget rather than by the model (finish reason "length").
   */
  forced = false;
  /** True when the last mask left out valid tokens for lack of budget (it is then not the state's full mask). */
  tight = false;

  /** Lazy constraints: the trigger text, and the free output's last bytes (to find it). */
  private readonly trigger: Uint8Array | undefined;
  private tail: number[] = [];
  /** Whether the automaton constrains now (lazy constraints: between trigger and end of document). */
  private on: boolean;

  constructor(constraint: TokenConstraint, budget: number) {
    this.trigger = constraint.automaton.schema.trigger;
    if (!this.trigger && budget < constraint.minTokens) {
      throw new InvalidOptionError("jsonSchema", "", undefined, { message: `jsonSchema needs ${constraint.minTokens} tokens but only ${budget} fit` });
    }
    this.constraint = constraint;
    this.budget = budget;
    this.current = constraint.initial;
    this.on = !this.trigger;
  }

  /** Index of the next token to generate (= tokens seen so far). */
  get step(): number {
    return this.generated;
  }

  /** False while a lazy constraint waits for its trigger (every token is allowed). */
  get constraining(): boolean {
    return this.on;
  }

  /** The automaton state after the tokens pushed so far. */
  get state(): StateId {
    return this.current;
  }

  /** True when the document is complete and nothing may follow (never for lazy constraints). */
  get finished(): boolean {
    return this.on && !this.trigger && this.constraint.finished(this.current);
  }

  /**
   * Advances over a token the engine produced.
   * @throws MlxNodeError when the token was not allowed (the engine ignored its mask: a bug).
   */
  push(token: number): void {
    if (!this.on) {
      this.generated++;
      this.watch(token);
      return;
    }
    const next = this.constraint.advance(this.current, token);
    if (next === REJECT) {
      // Not typed here: the backend running the engine wraps it as its engine error (MlxError, GgufError).
      throw new Error(`jsonSchema: the engine produced token ${token}, which the constraint did not allow at step ${this.generated}`);
    }
    this.current = next;
    this.generated++;
    // A lazy constraint whose document is complete lets generation go free again.
    if (this.trigger && this.constraint.finished(next)) {
      this.on = false;
      this.tail = [];
    }
  }

  /** Free output of a lazy constraint: activates the automaton once the output ends with the trigger. */
  private watch(token: number): void {
    const trigger = this.trigger as Uint8Array;
    const bytes = this.constraint.vocab.bytes[token] ?? new Uint8Array(0);
    for (let i = 0; i < bytes.length; i++) {
      this.tail.push(bytes[i]);
      if (this.tail.length > trigger.length) this.tail.shift();
      if (this.tail.length < trigger.length || !this.tail.every((b, k) => b === trigger[k])) continue;
      this.tail = [];
      // Only a call that can still be finished within the budget is constrained; the rest of a
      // token that ends past the marker must already fit the call, or the call stays free text.
      const automaton = this.constraint.automaton;
      const state = automaton.advance(this.constraint.initial, bytes.subarray(i + 1));
      if (state !== REJECT && automaton.cost(state) <= this.budget - this.generated) {
        this.on = true;
        this.current = state;
      }
      return;
    }
  }

  /** Bitmask of the tokens allowed for the next step, or null when generation must end now. */
  mask(): Uint32Array | null {
    if (this.finished) return null;
    if (!this.on) {
      this.tight = false;
      return this.constraint.freeMask();
    }
    const start = performance.now();
    const remaining = this.budget - this.generated - 1;
    if (this.constraint.automaton.cost(this.current) > remaining) this.forced = true;
    const mask = this.constraint.mask(this.current, remaining);
    this.tight = !this.constraint.fits(this.current, remaining);
    this.maskMs += performance.now() - start;
    return mask;
  }

  /**
   * When no slack is left (the tokens left equal the bytes still needed), the rest of the document
   * is forced: its shortest completion as tokens, which a backend may append without sampling.
   * Undefined while the model still has a choice.
   */
  forcedCompletion(): number[] | undefined {
    if (!this.on) return undefined;
    const cost = this.constraint.automaton.cost(this.current);
    if (cost === 0 || cost < this.budget - this.generated) return undefined;
    this.forced = true;
    return this.constraint.completionTokens(this.current);
  }
}
