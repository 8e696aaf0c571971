/**
 * What each llama.cpp decode of a loaded GgufBackend holds and costs: the sequences (rows) and
 * tokens node-llama-cpp put in it, and the process CPU time while it ran. Read on node-llama-cpp's
 * native context calls (internals of the pinned 3.22.1: initBatch, one addToBatch per sequence,
 * decodeBatch), so that batching can be checked from outside: tests/batching.test.ts and the
 * `rows` mode of bench/gguf-batching.ts.
 */
import type { GgufBackend } from "../lib/backends/gguf.js";

/** One llama.cpp decode call. */
export interface DecodeCall {
  rows: number;
  tokens: number;
  /** Process CPU time (all threads) while the call ran, ms. */
  cpuMs: number;
  /** Wall time of the call, ms. */
  wallMs: number;
}

/**
 * Records every llama.cpp decode of `model` from now on, until it is unloaded, into the returned
 * array (clear it with `length = 0` between measurements).
 */
export function recordDecodeCalls(model: GgufBackend): DecodeCall[] {
  const context = (model as unknown as { loaded?: { context: { _ctx: Record<string, unknown> } } }).loaded?.context;
  if (!context) throw new Error("recordDecodeCalls: no model is loaded");
  const native = context._ctx;
  const call = (name: string, args: unknown[]) => (native[name] as (...a: unknown[]) => unknown).apply(native, args);
  const calls: DecodeCall[] = [];
  let rows = 0;
  let tokens = 0;
  const counted: Record<string, (...args: unknown[]) => unknown> = {
    initBatch: (...args) => {
      rows = tokens = 0;
      return call("initBatch", args);
    },
    addToBatch: (...args) => {
      rows++;
      tokens += (args[2] as ArrayLike<number>).length;
      return call("addToBatch", args);
    },
    decodeBatch: (...args) => {
      const entry = { rows, tokens, cpuMs: 0, wallMs: 0 };
      const cpu = process.cpuUsage();
      const start = performance.now();
      const done = () => {
        const used = process.cpuUsage(cpu);
        entry.cpuMs = (used.user + used.system) / 1000;
        entry.wallMs = performance.now() - start;
        calls.push(entry);
      };
      return Promise.resolve(call("decodeBatch", args)).finally(done);
    },
  };
  // Native methods need the native object as `this`.
  context._ctx = new Proxy(native, {
    get: (target, key) => {
      if (typeof key === "string" && key in counted) return counted[key];
      const value: unknown = Reflect.get(target, key);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return calls;
}
