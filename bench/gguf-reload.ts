/**
 * Memory over repeated load/unload cycles of one GGUF file: GgufBackend against raw node-llama-cpp
 * doing the same cycles (load the model, create a 1-sequence context, free both), each side in its
 * own fresh child process so neither inherits the other's heap. After every `every` cycles the
 * child forces a GC and records RSS, JS heap and external memory; the report gives the growth per
 * cycle after the warm-up (least-squares slope), for both sides and their difference.
 *
 * Run after `tsc`:  node dist/bench/gguf-reload.js [model.gguf] [cycles] [every]
 * (defaults: ../shared/models/stories260K/stories260K.gguf, 200 cycles, every 10). About 1 minute
 * for 200 cycles of stories260K on a 2-core machine; not part of `npm test`.
 *
 * The children run with glibc's mmap threshold fixed (MALLOC_MMAP_THRESHOLD_=131072) unless
 * GGUF_RELOAD_DEFAULT_MALLOC=1. With glibc's default, the threshold rises after llama.cpp frees its
 * large buffers, later ones come from the heap arenas, and RSS swings by ±40 MB between samples on
 * both sides and drifts up with fragmentation. Measured on stories260K (2-core EPYC, 2026-12-01):
 * - default malloc, 600 cycles: GgufBackend +25.9 KB/cycle, raw node-llama-cpp +79.0 KB/cycle
 *   (200-cycle runs: 24 to 380 KB/cycle on either side from run to run);
 * - threshold fixed, 1000 cycles: GgufBackend -0.3 KB/cycle, raw -0.3 KB/cycle (RSS flat at
 *   96 MB from cycle 50 on), so nothing is leaked, by us or by node-llama-cpp;
 * - V8 heap snapshots after 50 and 250 cycles: only compiled code grows (~70 KB), the same in both.
 * GGUF_RELOAD_SERIES=1 prints every sample. GGUF_RELOAD_MAX_BATCH=N loads GgufBackend with
 * `maxBatch: N` (more llama.cpp sequences per context); GGUF_RELOAD_SIDES=backend runs one side.
 */
import { spawnSync } from "node:child_process";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";

interface Sample {
  cycle: number;
  rss: number;
  heapUsed: number;
  external: number;
}

type Side = "backend" | "raw";

/** Child: runs the cycles of one side and prints its samples as JSON. */
async function child(side: Side, file: string, cycles: number, every: number): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error("run the child with --expose-gc");
  const samples: Sample[] = [];
  const sample = async (cycle: number) => {
    // Two GCs with a turn of the event loop between: finalizers of freed native handles run.
    gc();
    await new Promise((r) => setImmediate(r));
    gc();
    const m = process.memoryUsage();
    samples.push({ cycle, rss: m.rss, heapUsed: m.heapUsed, external: m.external });
  };
  let cycle: () => Promise<void>;
  if (side === "backend") {
    const { GgufBackend } = await import("../lib/backends/gguf.js");
    const backend = new GgufBackend();
    const maxBatch = process.env.GGUF_RELOAD_MAX_BATCH ? Number(process.env.GGUF_RELOAD_MAX_BATCH) : undefined;
    cycle = async () => {
      await backend.load(file, { threads: 1, ...(maxBatch ? { maxBatch } : {}) });
      await backend.unload();
    };
  } else {
    // The same getLlama options as GgufBackend, and the same context (trained size capped at 4096, 1 thread, 1 sequence).
    const lib = await import("node-llama-cpp");
    const llama = await lib.getLlama({ gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false, maxThreads: 0, logLevel: lib.LlamaLogLevel.warn });
    cycle = async () => {
      const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
      const context = await model.createContext({ contextSize: Math.min(model.trainContextSize || 4096, 4096), threads: 1, sequences: 1, failedCreationRemedy: false });
      context.getSequence();
      await context.dispose();
      await model.dispose();
    };
  }
  await sample(0);
  for (let i = 1; i <= cycles; i++) {
    await cycle();
    if (i % every === 0) await sample(i);
  }
  process.stdout.write(JSON.stringify(samples));
}

/** Least-squares slope of `y` over `cycle`, in bytes per cycle. */
function slope(samples: Sample[], y: (s: Sample) => number): number {
  const n = samples.length;
  const mx = samples.reduce((a, s) => a + s.cycle, 0) / n;
  const my = samples.reduce((a, s) => a + y(s), 0) / n;
  let num = 0;
  let den = 0;
  for (const s of samples) {
    num += (s.cycle - mx) * (y(s) - my);
    den += (s.cycle - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

function main(): void {
  const [fileArg, cyclesArg, everyArg] = process.argv.slice(2);
  const here = fileURLToPath(import.meta.url);
  if (process.env.GGUF_RELOAD_CHILD) {
    void child(process.env.GGUF_RELOAD_CHILD as Side, fileArg!, Number(cyclesArg), Number(everyArg));
    return;
  }
  const file = resolve(fileArg || resolve(here, "..", "..", "..", "..", "shared", "models", "stories260K", "stories260K.gguf"));
  const cycles = Number(cyclesArg ?? 200);
  const every = Number(everyArg ?? 10);
  const kb = (b: number) => `${(b / 1024).toFixed(1)} KB`;
  const slopes: Record<string, Record<string, number>> = {};
  const sides = (process.env.GGUF_RELOAD_SIDES?.split(",") ?? ["backend", "raw"]) as Side[];
  for (const side of sides) {
    const r = spawnSync(process.execPath, ["--expose-gc", here, file, String(cycles), String(every)], {
      encoding: "utf8",
      env: {
        ...process.env,
        GGUF_RELOAD_CHILD: side,
        ...(process.env.GGUF_RELOAD_DEFAULT_MALLOC ? {} : { MALLOC_MMAP_THRESHOLD_: process.env.MALLOC_MMAP_THRESHOLD_ ?? "131072" }),
      },
      maxBuffer: 64 * 2 ** 20,
    });
    if (r.status !== 0) throw new Error(`${side} child failed (${r.status}): ${r.stderr}`);
    const samples = JSON.parse(r.stdout) as Sample[];
    // The first fifth of the cycles is warm-up (allocator arenas, lazily created caches).
    const steady = samples.filter((s) => s.cycle >= cycles / 5);
    slopes[side] = { rss: slope(steady, (s) => s.rss), heapUsed: slope(steady, (s) => s.heapUsed), external: slope(steady, (s) => s.external) };
    const first = samples[0]!;
    const last = samples.at(-1)!;
    if (process.env.GGUF_RELOAD_SERIES) console.log(`${side} RSS MB by cycle: ${samples.map((s) => `${s.cycle}:${(s.rss / 2 ** 20).toFixed(1)}`).join(" ")}`);
    console.log(
      `${side.padEnd(8)} RSS ${kb(first.rss)} -> ${kb(last.rss)}, heap ${kb(first.heapUsed)} -> ${kb(last.heapUsed)}; ` +
        `per cycle after warm-up: RSS ${kb(slopes[side].rss!)}, heap ${kb(slopes[side].heapUsed!)}, external ${kb(slopes[side].external!)}`,
    );
  }
  if (slopes.backend && slopes.raw) console.log(`GgufBackend - raw, per cycle: RSS ${kb(slopes.backend!.rss! - slopes.raw!.rss!)}, heap ${kb(slopes.backend!.heapUsed! - slopes.raw!.heapUsed!)}`);
}

main();
