/**
 * The {@link GenerationStream} callers get: lazy (nothing is queued or run until it is iterated or
 * its `result` is awaited) and always settling:
 * - iterated to the end: `result` is the whole result;
 * - left early (`break`, `return()`, a throw in the loop body, also before the first chunk): the
 *   generation is cancelled and `result` is the partial result with `finishReason: "abort"`;
 * - `result` awaited without iterating (or while an iteration is paused): the stream runs to its
 *   end by itself, and chunks not yet read are kept for an iteration that comes later;
 * - the reader dropped mid-iteration without `return()`: left as by `return()` once it is garbage.
 */
import type { GenerateChunk, GenerateResult, GenerationStream } from "./backend.js";
import { Channel } from "./channel.js";

/**
 * A promise that tells its creator when someone first waits for it (`then`, `catch`, `finally`,
 * `await`). `await` reaches `then` because the constructor is not the intrinsic Promise; derived
 * promises are plain Promises (species), so only this one observes.
 */
class ObservedPromise<T> extends Promise<T> {
  static override get [Symbol.species](): PromiseConstructor {
    return Promise;
  }

  onObserved: (() => void) | undefined;

  override then<A = T, B = never>(
    onFulfilled?: ((value: T) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    const hook = this.onObserved;
    this.onObserved = undefined;
    hook?.();
    return super.then(onFulfilled, onRejected);
  }
}

/**
 * Wraps a generation as a {@link GenerationStream}.
 * @param source starts the generation; called at most once, on the first read, with the signal
 *   that ends it (the caller's, or leaving the stream early; also while it waits in the queue).
 * @param partial the result so far, used when the caller leaves before the end.
 * @param callerSignal the caller's `signal` option.
 */
export function lazyGenerationStream(
  source: (signal: AbortSignal) => AsyncGenerator<GenerateChunk, GenerateResult>,
  partial: () => GenerateResult,
  callerSignal: AbortSignal | undefined,
): GenerationStream {
  // Linked by hand for the generation's lifetime only: AbortSignal.any keeps every combined signal
  // on a long-lived caller signal in some Node versions (nodejs/node#55351).
  const leave = new AbortController();
  let settle!: { resolve: (r: GenerateResult) => void; reject: (e: unknown) => void };
  const result = new ObservedPromise<GenerateResult>((resolve, reject) => (settle = { resolve, reject }));
  let settled = false;
  const resolve = (r: GenerateResult) => {
    if (!settled) (settled = true), settle.resolve(r);
  };
  const reject = (e: unknown) => {
    if (!settled) (settled = true), settle.reject(e);
  };

  async function* run(): AsyncGenerator<GenerateChunk, void> {
    const follow = () => leave.abort(callerSignal?.reason);
    if (callerSignal?.aborted) follow();
    else callerSignal?.addEventListener("abort", follow, { once: true });
    try {
      resolve(yield* source(leave.signal));
    } catch (error) {
      reject(error);
      throw error;
    } finally {
      callerSignal?.removeEventListener("abort", follow);
      // Only reached unsettled when the caller left early (`return()` while suspended at a chunk).
      resolve(partial());
    }
  }
  let generator: AsyncGenerator<GenerateChunk, void> | undefined;
  const inner = () => (generator ??= run());

  // When `result` is awaited, a pump runs the generation to its end; an iteration then reads the
  // chunks from this buffer. Reads already pending on the generator are served first (async
  // generators answer requests in order), so no chunk is lost or reordered.
  let buffer: AsyncIterator<GenerateChunk> | undefined;
  let left = false;
  result.onObserved = () => {
    if (settled || left || buffer) return;
    dropped.unregister(core); // the pump reads to the end now
    const channel = new Channel<GenerateChunk>();
    buffer = channel[Symbol.asyncIterator]();
    void (async () => {
      try {
        for (let step = await inner().next(); !step.done && !left; step = await inner().next()) channel.push(step.value);
        channel.end();
      } catch (error) {
        channel.fail(error);
      }
    })();
  };

  const done: IteratorReturnResult<undefined> = { value: undefined, done: true };
  // No closure here may capture the reader or the stream object: the registry must see them die.
  const core: ReaderCore = {
    next: (reader) => {
      if (buffer) return buffer.next();
      if (left) return Promise.resolve(done);
      if (!generator) dropped.register(reader, core, core);
      return inner().next() as Promise<IteratorResult<GenerateChunk>>;
    },
    leave: async () => {
      if (!left) {
        left = true;
        dropped.unregister(core);
        leave.abort();
        await buffer?.return?.();
        await inner().return();
        resolve(partial()); // a generator that never started runs no finally
      }
      return done;
    },
  };
  // Once settled, nothing is left to watch. The rejection handler also keeps a `result` nobody reads
  // (the caller may only iterate) from becoming an unhandled rejection. Promise.prototype.then, not
  // result.then: this is not an observer.
  const unwatch = () => dropped.unregister(core);
  void Promise.prototype.then.call(result, unwatch, unwatch);
  return new LazyGenerationStream(result, new StreamReader(core));
}

/** What a reader needs from its stream; holds no reference to the reader. */
interface ReaderCore {
  next(reader: object): Promise<IteratorResult<GenerateChunk>>;
  leave(): Promise<IteratorReturnResult<undefined>>;
}

/**
 * A reader dropped mid-iteration (no `break`, no `return()`) would keep the model's turn for ever:
 * once it is garbage, the generation is left as by `return()`.
 */
const dropped = new FinalizationRegistry<ReaderCore>((core) => void core.leave());

class StreamReader implements AsyncIterableIterator<GenerateChunk> {
  readonly #core: ReaderCore;
  constructor(core: ReaderCore) {
    this.#core = core;
  }
  next(): Promise<IteratorResult<GenerateChunk>> {
    return this.#core.next(this);
  }
  return(): Promise<IteratorReturnResult<undefined>> {
    return this.#core.leave();
  }
  // Iterable itself, as a generator object is: `for await (const c of stream[Symbol.asyncIterator]())` works.
  [Symbol.asyncIterator](): this {
    return this;
  }
}

class LazyGenerationStream implements GenerationStream {
  readonly #reader: StreamReader;
  constructor(
    readonly result: Promise<GenerateResult>,
    reader: StreamReader,
  ) {
    this.#reader = reader;
  }
  [Symbol.asyncIterator](): StreamReader {
    return this.#reader;
  }
}
