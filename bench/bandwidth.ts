/**
 * Memory bandwidth of this machine, measured in the same run as the models, for the decode bound
 * (decode reads every weight once per token, so tokens/s ≤ bandwidth / weight bytes).
 *
 * All sweeps run in worker threads over one SharedArrayBuffer (default 1 GiB, far larger than any
 * cache), so the memory is returned when they end. Methods, best of `rounds` each:
 * - read, 1 thread: `Buffer.indexOf` of a byte that is absent, i.e. glibc's vectorised memchr
 *   over the whole buffer (read only; GB/s = bytes / time).
 * - read, all cores: the same, one slice per core at once (time = until the last one finishes).
 * - copy, 1 thread: `Buffer.copy` of one half onto the other (memcpy), counted as STREAM does:
 *   bytes read + bytes written (2 × half) / time.
 * - JS read, 1 thread: a summing loop over a Float64Array (JIT-compiled JS; often compute-bound).
 * The bound uses the best read figure (`bestReadGBs`).
 */
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";

export interface BandwidthResult {
  bytes: number;
  rounds: number;
  threads: number;
  /** GB/s (10^9 bytes/s), best of the rounds. */
  readGBs: number;
  readAllCoresGBs: number;
  copyGBs: number;
  jsReadGBs: number;
  bestReadGBs: number;
  /** Every round, GB/s. */
  samples: { read: number[]; readAllCores: number[]; copy: number[]; jsRead: number[] };
}

const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const { sab, offset, length } = workerData;
const buf = Buffer.from(sab, offset, length);
parentPort.on("message", (op) => {
  const t = performance.now();
  let check = 0;
  if (op === "fill") buf.fill(0);
  else if (op === "read") check = buf.indexOf(1);
  else if (op === "copy") { const half = length / 2; buf.copy(buf, half, 0, half); }
  else if (op === "js") {
    const f = new Float64Array(sab, offset, length / 8);
    let a = 0, b = 0, c = 0, d = 0;
    for (let i = 0; i < f.length; i += 4) { a += f[i]; b += f[i + 1]; c += f[i + 2]; d += f[i + 3]; }
    check = a + b + c + d;
  }
  parentPort.postMessage({ ms: performance.now() - t, check });
});
`;

class SweepWorker {
  private readonly worker: Worker;
  private waiting: { resolve(ms: number): void; reject(e: Error): void } | undefined;
  constructor(sab: SharedArrayBuffer, offset: number, length: number) {
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { sab, offset, length } });
    this.worker.on("message", (m: { ms: number }) => this.settle()?.resolve(m.ms));
    this.worker.on("error", (e: Error) => this.settle()?.reject(e));
  }
  private settle() {
    const w = this.waiting;
    this.waiting = undefined;
    return w;
  }
  run(op: "fill" | "read" | "copy" | "js"): Promise<number> {
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.worker.postMessage(op);
    });
  }
  terminate(): Promise<number> {
    return this.worker.terminate();
  }
}

/** Measures read/copy bandwidth; `bytes` is rounded down to a multiple of 64 × threads. */
export async function measureBandwidth(options: { bytes?: number; rounds?: number } = {}): Promise<BandwidthResult> {
  const threads = Math.max(1, availableParallelism());
  const rounds = Math.max(1, options.rounds ?? 5);
  const unit = 64 * threads;
  const bytes = Math.floor((options.bytes ?? 2 ** 30) / unit) * unit;
  const sab = new SharedArrayBuffer(bytes);
  const whole = new SweepWorker(sab, 0, bytes);
  const slices = Array.from({ length: threads }, (_, i) => new SweepWorker(sab, (i * bytes) / threads, bytes / threads));
  const gbs = (moved: number, ms: number) => moved / ms / 1e6;
  const samples = { read: [] as number[], readAllCores: [] as number[], copy: [] as number[], jsRead: [] as number[] };
  try {
    await whole.run("fill"); // touch every page before timing
    await whole.run("read"); // warm up
    for (let r = 0; r < rounds; r++) {
      samples.read.push(gbs(bytes, await whole.run("read")));
      const start = performance.now();
      await Promise.all(slices.map((w) => w.run("read")));
      samples.readAllCores.push(gbs(bytes, performance.now() - start));
      samples.copy.push(gbs(bytes, await whole.run("copy"))); // half read + half written
      if (r < 3) samples.jsRead.push(gbs(bytes, await whole.run("js")));
    }
  } finally {
    await Promise.all([whole, ...slices].map((w) => w.terminate()));
  }
  const best = (v: number[]) => Math.max(...v);
  const readGBs = best(samples.read);
  const readAllCoresGBs = best(samples.readAllCores);
  return {
    bytes, rounds, threads, readGBs, readAllCoresGBs, copyGBs: best(samples.copy), jsReadGBs: best(samples.jsRead),
    bestReadGBs: Math.max(readGBs, readAllCoresGBs), samples,
  };
}

/** Combines several measurements of one run (start and end): best of each figure, all samples kept. */
export function mergeBandwidth(results: readonly BandwidthResult[]): BandwidthResult {
  const [first] = results;
  const all = (k: keyof BandwidthResult["samples"]) => results.flatMap((r) => r.samples[k]);
  const best = (k: "readGBs" | "readAllCoresGBs" | "copyGBs" | "jsReadGBs" | "bestReadGBs") => Math.max(...results.map((r) => r[k]));
  return {
    bytes: first.bytes, rounds: results.reduce((n, r) => n + r.rounds, 0), threads: first.threads,
    readGBs: best("readGBs"), readAllCoresGBs: best("readAllCoresGBs"), copyGBs: best("copyGBs"), jsReadGBs: best("jsReadGBs"),
    bestReadGBs: best("bestReadGBs"),
    samples: { read: all("read"), readAllCores: all("readAllCores"), copy: all("copy"), jsRead: all("jsRead") },
  };
}
