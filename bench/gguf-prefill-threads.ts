/**
 * One prompt batch of N tokens on 1 vs 2 threads (interleaved, fresh sequence each time): wall and
 * process CPU ms, medians. Shows what ggml's spinning workers cost when another process holds a
 * core (the reason prompt batches follow decode's count once more threads stalled; lib/backends/gguf/threads.ts).
 *
 *   node dist/bench/gguf-prefill-threads.js <model.gguf> [rounds=5] [sizes=5,16,64]
 */
import { loadavg } from "node:os";
import type { LlamaContext, LlamaContextSequence, Token } from "node-llama-cpp";
import { GgufBackend } from "../lib/backends/gguf.js";
import { setContextThreads } from "../lib/backends/gguf/threads.js";
import { median } from "./stats.js";

const [path, rounds = "5", sizes = "5,16,64"] = process.argv.slice(2);
if (!path) {
  console.error("usage: node dist/bench/gguf-prefill-threads.js <model.gguf> [rounds] [sizes]");
  process.exit(2);
}
const model = new GgufBackend();
await model.load(path, { maxBatch: 1, promptCacheBytes: 0, threads: 2 });
const { context, slots } = (model as unknown as { loaded: { context: LlamaContext; slots: { sequence: LlamaContextSequence }[] } }).loaded;
const sequence = slots[0].sequence;
const ids = model.tokenize("Once upon a time there was a little girl who lived in a village near the forest. ".repeat(40)) as Token[];
const load = loadavg()[0];
const samples = new Map<string, { wall: number[]; cpu: number[] }>();
for (let r = 0; r < Number(rounds); r++) {
  for (const size of sizes.split(",").map(Number)) {
    for (const threads of [1, 2]) {
      await sequence.clearHistory();
      setContextThreads(context, threads);
      const cpu = process.cpuUsage();
      const start = performance.now();
      await sequence.evaluateWithoutGeneratingNewTokens(ids.slice(0, size));
      const wall = performance.now() - start;
      const used = process.cpuUsage(cpu);
      const key = `${size} tokens, ${threads} thread${threads > 1 ? "s" : ""}`;
      const entry = samples.get(key) ?? { wall: [], cpu: [] };
      entry.wall.push(wall);
      entry.cpu.push((used.user + used.system) / 1000);
      samples.set(key, entry);
    }
  }
}
await model.unload();
console.log(`prompt batch on 1 vs 2 threads, medians of ${rounds} (load average ${load.toFixed(2)} → ${loadavg()[0].toFixed(2)})`);
for (const [name, { wall, cpu }] of samples) {
  console.log(`  ${name.padEnd(20)} wall ${median(wall).toFixed(1).padStart(8)} ms  CPU ${median(cpu).toFixed(1).padStart(8)} ms  (walls ${wall.map((w) => w.toFixed(0)).join(", ")})`);
}
