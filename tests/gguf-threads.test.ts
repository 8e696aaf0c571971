/**
 * The GGUF thread rule and the decode-thread tuner (lib/backends/gguf/threads.ts): which counts
 * are compared, and which one is chosen from per-token timings. The tuner on a real model is
 * tested in tests/synthetic-models.test.ts and tests/gguf.test.ts.
 */
import { describe, expect, it } from "vitest";
import { decodeThreadCandidates, DecodeThreadTuner, SMALL_MODEL_BYTES, TINY_MODEL_BYTES } from "../lib/backends/gguf/threads.js";

/** Decodes tokens until the tuner decides; `msFor(threads, tokenIndex)` is each token's time. */
function tune(tuner: DecodeThreadTuner, msFor: (threads: number, i: number) => number, limit = 1000): { used: number[] } {
  const used: number[] = [];
  for (let i = 0; i < limit && tuner.measuring; i++) {
    const threads = tuner.next();
    used.push(threads);
    tuner.record(threads, msFor(threads, i));
  }
  return { used };
}

describe("decodeThreadCandidates", () => {
  it("compares nothing for tiny models or one core, and 1 vs every core otherwise, the default first", () => {
    expect(decodeThreadCandidates(1_185_376, 8, 8)).toEqual([]);
    expect(decodeThreadCandidates(TINY_MODEL_BYTES, 1, 1)).toEqual([]);
    expect(decodeThreadCandidates(TINY_MODEL_BYTES, 2, 2)).toEqual([1, 2]);
    expect(decodeThreadCandidates(SMALL_MODEL_BYTES, 2, 2)).toEqual([2, 1]);
    expect(decodeThreadCandidates(SMALL_MODEL_BYTES, 8, 4)).toEqual([4, 1]); // never more than the available cores
  });
});

describe("DecodeThreadTuner", () => {
  it("chooses the count with the faster mean, alternating blocks of tokens", () => {
    const tuner = new DecodeThreadTuner([1, 2]);
    const { used } = tune(tuner, (t) => (t === 2 ? 10 : 14));
    expect(tuner.chosen).toBe(2);
    expect(tuner.next()).toBe(2);
    expect(used.slice(0, 9)).toEqual([1, 1, 1, 1, 2, 2, 2, 2, 1]); // blocks of 4, in turn
    expect(used.filter((t) => t === 1)).toHaveLength(20); // 15 timed + the untimed first token of 5 blocks
  });

  it("chooses by mean time per token: a count that is faster on most tokens but stalls on some loses", () => {
    // Per-token ms measured on the dev machine (Qwen2.5-0.5B-shape Q4_0): 2 threads were faster on
    // most tokens and stalled on others, and decoded 51-64 tok/s against 74-77 on 1 thread.
    const two = [31.7, 10.9, 12, 10.9, 28.4, 10.6, 10.8, 49.5, 11.1, 10.5, 11.4, 13.3, 11.6, 48.3, 11.6];
    const one = [13.7, 13.3, 13.4, 13.9, 13.7, 13.8, 13.5, 13.4, 13.3, 13.2, 13.3, 13.4, 13.2, 13, 13.1];
    const tuner = new DecodeThreadTuner([2, 1]);
    const next = { 1: 0, 2: 0 };
    tune(tuner, (t) => (t === 2 ? two : one)[next[t as 1 | 2]++ % 15]);
    expect(tuner.chosen).toBe(1);
  });

  it("keeps fewer threads unless more are faster by the margin", () => {
    const tuner = new DecodeThreadTuner([2, 1]);
    tune(tuner, (t) => (t === 2 ? 8.8 : 10)); // 12% faster: within the 15% margin
    expect(tuner.chosen).toBe(1);
  });

  it("drops a count more than twice as slow after one block", () => {
    const tuner = new DecodeThreadTuner([2, 1]);
    const { used } = tune(tuner, (t) => (t === 2 ? 50 : 1));
    expect(tuner.chosen).toBe(1);
    expect(used.filter((t) => t === 2)).toHaveLength(4);
  });

  it("says more threads stalled only when they were dropped as more than twice as slow", () => {
    // Per-token ms on the shared 2-core machine (load 8, SmolLM2-135M-shape Q4_0): 9.4 on 1 thread, 55 on 2.
    const busy = new DecodeThreadTuner([1, 2]);
    tune(busy, (t) => (t === 2 ? 55 : 9.4));
    expect(busy.chosen).toBe(1);
    expect(busy.moreThreadsStalled).toBe(true);
    const idle = new DecodeThreadTuner([1, 2]);
    expect(idle.moreThreadsStalled).toBe(false); // not chosen yet
    tune(idle, (t) => (t === 2 ? 11 : 10)); // slower, not stalled
    expect(idle.chosen).toBe(1);
    expect(idle.moreThreadsStalled).toBe(false);
    const manyCores = new DecodeThreadTuner([8, 1]);
    tune(manyCores, (t) => (t === 8 ? 5 : 30)); // fewer threads dropped: not a stall of more
    expect(manyCores.chosen).toBe(8);
    expect(manyCores.moreThreadsStalled).toBe(false);
  });

  it("does not time the first token of a block, which pays for the switch", () => {
    const tuner = new DecodeThreadTuner([1, 2]);
    let inBlock = 0;
    let last = 0;
    tune(tuner, (t) => {
      inBlock = t === last ? inBlock + 1 : 0;
      last = t;
      return inBlock === 0 ? 1000 : t === 2 ? 10 : 14;
    });
    expect(tuner.chosen).toBe(2);
  });

  it("follows drifts that hit every count alike", () => {
    const tuner = new DecodeThreadTuner([1, 2]);
    tune(tuner, (t, i) => (t === 2 ? 10 : 14) * (1 + i / 20)); // the machine gets slower and slower
    expect(tuner.chosen).toBe(2);
  });

  it("needs two counts", () => {
    expect(() => new DecodeThreadTuner([2])).toThrow(RangeError);
    expect(() => new DecodeThreadTuner([2, 2])).toThrow(/two or more/);
  });
});
