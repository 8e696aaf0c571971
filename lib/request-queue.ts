/**
 * A fair (FIFO) queue in front of a loaded model: up to `slots` requests run at once (1 for an
 * engine that serves one request at a time, more where the backend batches them); the others
 * wait in order, and the queue bounds how many may wait.
 */
import { BusyError } from "./errors.js";

interface Waiter {
  grant: (release: () => void) => void;
  fail: (error: unknown) => void;
}

export class RequestQueue {
  private running = 0;
  private slots = 1;
  private readonly waiting: Waiter[] = [];

  /** @param maxQueued requests allowed to wait behind the running ones before `BusyError`. */
  constructor(private readonly maxQueued: number) {}

  /** Sets how many requests may run at once (at load, before any request). */
  setSlots(slots: number): void {
    this.slots = slots;
    while (this.running < this.slots && this.waiting.length > 0) {
      this.running++;
      this.waiting.shift()!.grant(this.releaser());
    }
  }

  /** Number of requests waiting (not counting the running ones). */
  get queued(): number {
    return this.waiting.length;
  }

  /**
   * Resolves with a release function once this request's turn comes. Rejects with
   * `BusyError` when the queue is full, or with the signal's reason when aborted while waiting.
   */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (this.running < this.slots) {
      this.running++;
      return Promise.resolve(this.releaser());
    }
    if (this.waiting.length >= this.maxQueued) return Promise.reject(new BusyError(this.maxQueued));
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        grant: (release) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(release);
        },
        fail: (error) => {
          signal?.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      const onAbort = () => {
        const at = this.waiting.indexOf(waiter);
        if (at !== -1) this.waiting.splice(at, 1);
        waiter.fail(signal?.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiting.push(waiter);
    });
  }

  /** Fails every waiting request with `error` (used by unload). The running ones are not touched. */
  rejectWaiting(error: unknown): void {
    for (const waiter of this.waiting.splice(0)) waiter.fail(error);
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next.grant(this.releaser());
      else this.running--;
    };
  }
}
