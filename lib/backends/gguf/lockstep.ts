/**
 * Concurrent GGUF runs request their next tokens together, so that node-llama-cpp decodes them in
 * one llama.cpp batch.
 *
 * node-llama-cpp (3.22.1) hands each sequence its token as soon as that sequence's sampling ends,
 * and its batch loop starts the next batch with the sequences queued by the time the last sampling
 * of the batch ends. The sequence sampled last reaches the queue a few promise hops too late and
 * misses the batch, every step: measured on 8 concurrent requests, every decode held 7 rows (one
 * sequence always a step behind); 2 concurrent requests never shared a decode at all
 * (bench/results/gguf-batching-2026-12-01.md). Its public batching options do not help:
 * `dispatchSchedule` only times the first batch after an idle loop.
 *
 * Here a run that has its token and wants the next waits until every gated request in flight has
 * its token, then all waiting runs request at once, on the next macrotask (once node-llama-cpp's
 * batch loop has seen an empty queue and ended): they all land in the next batch.
 */
export class Lockstep {
  /** Gated requests whose token has not arrived. */
  private inFlight = 0;
  private readonly waiting: (() => void)[] = [];
  private flushScheduled = false;

  /**
   * Runs `request` (which queues one decode with node-llama-cpp) together with the other runs' next
   * requests. With `alone` (no other run is active) it runs at once: nothing to wait for, and
   * deferring it would put the consumer's work (woken on the next macrotask) before the decode.
   */
  request<T>(request: () => Promise<T>, alone: boolean): Promise<T> {
    const start = (): Promise<T> => {
      let result: Promise<T>;
      try {
        result = request();
      } catch (error) {
        result = Promise.reject(error); // counted and settled like any request: the others still flush
      }
      this.inFlight++;
      const done = () => {
        this.inFlight--;
        this.flushIfIdle();
      };
      result.then(done, done);
      return result;
    };
    if (alone && this.inFlight === 0 && this.waiting.length === 0) return start();
    return new Promise<T>((resolve, reject) => {
      this.waiting.push(() => start().then(resolve, reject));
      this.flushIfIdle();
    });
  }

  private flushIfIdle(): void {
    if (this.inFlight > 0 || this.waiting.length === 0 || this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      // A request started meanwhile (a run alone) is in flight: wait for its token too.
      if (this.inFlight > 0) return;
      for (const go of this.waiting.splice(0)) go();
    });
  }
}
