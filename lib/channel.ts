/**
 * A one-consumer async channel: a producer pushes values from callbacks, the consumer reads them
 * with `for await`. Bridges the native engine's callbacks to the AsyncIterable the contract uses.
 */
export class Channel<T> implements AsyncIterable<T> {
  private readonly values: T[] = [];
  private waiting: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | undefined;
  private ended = false;
  private error: unknown;
  private failed = false;

  push(value: T): void {
    if (this.ended) return;
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = undefined;
      w.resolve({ value, done: false });
    } else this.values.push(value);
  }

  /** No more values: the consumer's loop ends after the buffered ones. */
  end(): void {
    this.ended = true;
    this.wake();
  }

  /** Ends with an error, thrown to the consumer after the buffered values. */
  fail(error: unknown): void {
    this.failed = true;
    this.error = error;
    this.end();
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        if (this.values.length > 0) return Promise.resolve({ value: this.values.shift() as T, done: false });
        if (this.ended) return this.failed ? Promise.reject(this.error) : Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => (this.waiting = { resolve, reject }));
      },
      return: () => {
        this.ended = true;
        this.values.length = 0;
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  private wake(): void {
    if (!this.waiting || this.values.length > 0) return;
    const w = this.waiting;
    this.waiting = undefined;
    if (this.failed) w.reject(this.error);
    else w.resolve({ value: undefined, done: true });
  }
}
