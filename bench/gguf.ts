/**
 * GGUF row: GgufBackend ÷ raw node-llama-cpp, measured so that it can tell a 3% difference on a
 * shared 2-core machine.
 *
 *   node dist/bench/gguf.js [--threads 1,2] [--pairs 4] [--rounds 5] [--tokens 64] [--out DIR] model.gguf...
 *   const result = await benchGguf(paths);   // from bench/run.ts
 *
 * Method (issue #18):
 * - Each side runs in its own child process, one process at a time: two llama.cpp instances in
 *   one process slowed one of them by about 25%, so they never share one.
 * - Both sides are pinned to the same thread count (GgufBackend's `threads` load option, the raw
 *   context's `threads`) and the same context size.
 * - The measure is CPU time per decoded token: `process.cpuUsage()` (every thread of the process:
 *   JS, node-llama-cpp, ggml's workers) from the first generated token to the last, ÷ the tokens in
 *   between. Other load on the machine stretches wall time much more than it changes CPU time.
 * - A process runs `rounds` greedy decodes of `tokens` tokens after the first and reports its
 *   median; a pair is one backend process and one raw process, in alternating order (pair 0
 *   backend first, pair 1 raw first, ...). The pair's ratio is raw CPU/token ÷ backend CPU/token
 *   (> 1: GgufBackend spends less), and the row reports the median and spread over `pairs` pairs.
 */
import { fork } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { basename, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import type { Token } from "node-llama-cpp";
import { median, summarize, type Spread } from "./stats.js";

const SCRIPT = fileURLToPath(import.meta.url);
/** The goal of the row: GgufBackend costs at most 3% more CPU per token than node-llama-cpp itself. */
export const GGUF_VS_RAW_GOAL = 0.97;
/**
 * Pairs whose ratios lie further apart than this (max − min) cannot tell a 3% difference: the row
 * says so instead of PASS/FAIL (2-thread decodes on a loaded machine spread 0.4–3.4).
 */
export const GGUF_VS_RAW_MAX_SPREAD = 0.15;
const PROMPT = "Once upon a time";
/** The same context for both sides: large enough for the prompt and every decoded token. */
const CONTEXT_SIZE = 1024;

/** Options of {@link benchGguf}. */
export interface GgufBenchOptions {
  /** Thread counts, each its own row. Defaults to 1 and 2 (capped at the available cores). */
  threads?: number[];
  /** Backend/raw process pairs per row. Defaults to 4. */
  pairs?: number;
  /** Decodes per process (its median is the process's figure). Defaults to 5. */
  rounds?: number;
  /** Tokens timed per decode, after the first. Defaults to 64. */
  tokens?: number;
  /** Called with each finished pair (progress lines). */
  onPair?: (row: { model: string; threads: number }, pair: GgufPair) => void;
  /** Called with the result so far after each row (a long run keeps what it measured). */
  onRow?: (partial: GgufBenchResult) => void;
}

/** What one child process measured. */
export interface GgufSideResult {
  side: "backend" | "raw";
  /** Threads llama.cpp reported for the context. */
  threads: number;
  /** CPU µs per decoded token of each round. */
  cpuMicrosPerToken: number[];
  /** Wall-clock decode tokens/s of each round (for reference; noisy on a shared machine). */
  decodeTps: number[];
}

/** One backend process and one raw process, back to back. */
export interface GgufPair {
  first: "backend" | "raw";
  backend: GgufSideResult;
  raw: GgufSideResult;
  /** Median raw CPU/token ÷ median backend CPU/token. */
  ratio: number;
}

/** One model at one thread count. */
export interface GgufRow {
  model: string;
  threads: number;
  pairs: GgufPair[];
  /** Median and spread of the pairs' ratios. */
  ratio: Spread | undefined;
  /** Medians over all rounds of all processes, per side. */
  backendCpuMicrosPerToken: number;
  rawCpuMicrosPerToken: number;
  backendDecodeTps: number;
  rawDecodeTps: number;
  pass: boolean;
  /** PASS/FAIL against the goal, or NOISY when the pairs spread wider than GGUF_VS_RAW_MAX_SPREAD. */
  verdict: "PASS" | "FAIL" | "NOISY";
  error?: string;
}

/** Result of {@link benchGguf}. */
export interface GgufBenchResult {
  goal: number;
  pairs: number;
  rounds: number;
  tokens: number;
  contextSize: number;
  rows: GgufRow[];
  seconds: number;
}

interface SideSpec {
  side: "backend" | "raw";
  path: string;
  threads: number;
  rounds: number;
  tokens: number;
}

/** Runs one side in a fresh child process and returns what it measured. */
function runSide(spec: SideSpec): Promise<GgufSideResult> {
  return new Promise((resolveSide, rejectSide) => {
    const child = fork(SCRIPT, ["--side", JSON.stringify(spec)], { stdio: ["ignore", "ignore", "inherit", "ipc"] });
    let result: GgufSideResult | undefined;
    child.on("message", (m: { ok: true; result: GgufSideResult } | { ok: false; error: string }) => {
      if (m.ok) result = m.result;
      else rejectSide(new Error(`${spec.side} side: ${m.error}`));
    });
    child.on("error", rejectSide);
    child.on("exit", (code, signal) => {
      if (result) resolveSide(result);
      else rejectSide(new Error(`${spec.side} side exited (${signal ?? `code ${code}`}) without a result`));
    });
  });
}

/**
 * Measures every model at every thread count (sequentially; one child process at a time), fewest
 * threads first: on a loaded machine a multi-threaded decode is far slower (ggml's workers spin at
 * a barrier while their partner is descheduled), so the cheap rows come first.
 */
export async function benchGguf(paths: readonly string[], options: GgufBenchOptions = {}): Promise<GgufBenchResult> {
  const start = performance.now();
  const threads = [...new Set((options.threads ?? [1, 2]).map((t) => Math.max(1, Math.min(t, availableParallelism()))))];
  const pairs = Math.max(1, Math.floor(options.pairs ?? 4));
  const rounds = Math.max(1, Math.floor(options.rounds ?? 5));
  const tokens = Math.max(2, Math.floor(options.tokens ?? 64));
  const rows: GgufRow[] = [];
  const result = (): GgufBenchResult => ({ goal: GGUF_VS_RAW_GOAL, pairs, rounds, tokens, contextSize: CONTEXT_SIZE, rows, seconds: (performance.now() - start) / 1000 });
  for (const t of threads) {
    for (const path of paths) {
      const row: GgufRow = {
        model: path, threads: t, pairs: [], ratio: undefined, backendCpuMicrosPerToken: Number.NaN, rawCpuMicrosPerToken: Number.NaN,
        backendDecodeTps: Number.NaN, rawDecodeTps: Number.NaN, pass: false, verdict: "FAIL",
      };
      rows.push(row);
      try {
        for (let i = 0; i < pairs; i++) {
          const order: ("backend" | "raw")[] = i % 2 === 0 ? ["backend", "raw"] : ["raw", "backend"];
          const done: Partial<Record<"backend" | "raw", GgufSideResult>> = {};
          for (const side of order) done[side] = await runSide({ side, path, threads: t, rounds, tokens });
          const pair: GgufPair = {
            first: order[0], backend: done.backend!, raw: done.raw!,
            ratio: median(done.raw!.cpuMicrosPerToken) / median(done.backend!.cpuMicrosPerToken),
          };
          row.pairs.push(pair);
          options.onPair?.({ model: path, threads: t }, pair);
        }
      } catch (error) {
        row.error = error instanceof Error ? error.message : String(error);
      }
      const all = (side: "backend" | "raw", k: "cpuMicrosPerToken" | "decodeTps") => median(row.pairs.flatMap((p) => p[side][k]));
      row.ratio = summarize(row.pairs.map((p) => p.ratio));
      row.backendCpuMicrosPerToken = all("backend", "cpuMicrosPerToken");
      row.rawCpuMicrosPerToken = all("raw", "cpuMicrosPerToken");
      row.backendDecodeTps = all("backend", "decodeTps");
      row.rawDecodeTps = all("raw", "decodeTps");
      row.verdict = verdict(row);
      row.pass = row.verdict === "PASS";
      options.onRow?.(result());
    }
  }
  return result();
}

function verdict(row: GgufRow): GgufRow["verdict"] {
  if (row.error || !row.ratio) return "FAIL";
  if (row.ratio.max - row.ratio.min > GGUF_VS_RAW_MAX_SPREAD) return "NOISY";
  return row.ratio.median >= GGUF_VS_RAW_GOAL ? "PASS" : "FAIL";
}

// ---------------------------------------------------------------------------------------------
// The child process: one side, one model, `rounds` decodes.

/** Times one decode: `tokens` yields token counts as they arrive; CPU and wall time run from the first to the last token. */
async function timeDecode(tokens: AsyncIterable<number>, count: number): Promise<{ cpu: number; tps: number }> {
  let cpuAtFirst: NodeJS.CpuUsage | undefined;
  let cpuAtLast: NodeJS.CpuUsage | undefined;
  let first = 0;
  let last = 0;
  let after = 0;
  for await (const n of tokens) {
    if (n === 0) continue;
    if (!cpuAtFirst) {
      cpuAtFirst = process.cpuUsage();
      first = performance.now();
      after += n - 1;
    } else after += n;
    if (after >= count) {
      cpuAtLast = process.cpuUsage(cpuAtFirst);
      last = performance.now();
      break;
    }
  }
  if (!cpuAtLast) throw new Error(`the decode ended after ${after} of ${count} tokens`);
  return { cpu: (cpuAtLast.user + cpuAtLast.system) / after, tps: (after / (last - first)) * 1000 };
}

async function measureBackend(spec: SideSpec): Promise<GgufSideResult> {
  const { GgufBackend } = await import("../lib/backends/gguf.js");
  const backend = new GgufBackend();
  await backend.load(spec.path, { threads: spec.threads, contextSize: CONTEXT_SIZE });
  const prompt = backend.tokenize(PROMPT, { addSpecialTokens: true });
  const decode = async function* (count: number): AsyncGenerator<number> {
    for await (const chunk of backend.generateStream(prompt, { maxTokens: count + 1, temperature: 0, ignoreEos: true })) yield chunk.tokens.length;
  };
  try {
    return await rounds(spec, backend.threadCounts.decode, (count) => timeDecode(decode(count), count));
  } finally {
    await backend.unload();
  }
}

async function measureRaw(spec: SideSpec): Promise<GgufSideResult> {
  const lib = await import("node-llama-cpp");
  const llama = await lib.getLlama({
    gpu: false, build: "never", skipDownload: true, progressLogs: false, maxThreads: 0, logLevel: lib.LlamaLogLevel.error,
  });
  const model = await llama.loadModel({ modelPath: spec.path, gpuLayers: 0 });
  const context = await model.createContext({ contextSize: CONTEXT_SIZE, threads: spec.threads, sequences: 1 });
  const sequence = context.getSequence();
  const prompt = model.tokenize(PROMPT, true) as Token[];
  const decode = async function* (): AsyncGenerator<number> {
    await sequence.clearHistory();
    for await (const _ of sequence.evaluate(prompt, { temperature: 0 })) yield 1;
  };
  try {
    return await rounds(spec, context.currentThreads, (count) => timeDecode(decode(), count));
  } finally {
    await context.dispose();
    await model.dispose();
  }
}

/** A warm-up decode (not counted), then `spec.rounds` timed ones with a pause between them. */
async function rounds(spec: SideSpec, threads: number, once: (count: number) => Promise<{ cpu: number; tps: number }>): Promise<GgufSideResult> {
  await once(8);
  const result: GgufSideResult = { side: spec.side, threads, cpuMicrosPerToken: [], decodeTps: [] };
  for (let r = 0; r < spec.rounds; r++) {
    // ggml's workers spin for a while after a multi-threaded evaluation; let them settle.
    await new Promise((r) => setTimeout(r, 50));
    const { cpu, tps } = await once(spec.tokens);
    result.cpuMicrosPerToken.push(cpu);
    result.decodeTps.push(tps);
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Reports

const fixed = (v: number, d: number) => (Number.isFinite(v) ? v.toFixed(d) : "–");

/** The row as text: one line per model × threads, with PASS/FAIL against the goal. */
export function formatGgufBench(result: GgufBenchResult): string {
  const lines = [
    `GgufBackend ÷ raw node-llama-cpp: raw CPU µs/token ÷ GgufBackend CPU µs/token (goal ≥ ${result.goal})`,
    `${result.pairs} process pairs per row (alternating order), each process the median of ${result.rounds} decodes of ${result.tokens} tokens; ` +
      `both sides pinned to the row's threads, context ${result.contextSize}`,
    `${"model".padEnd(28)} ${"thr".padStart(3)} ${"ratio (min–max)".padStart(22)} ${"CPU µs/tok backend / raw".padStart(25)} ${"tok/s backend / raw".padStart(20)}  goal`,
  ];
  for (const row of result.rows) {
    const r = row.ratio;
    const ratio = r ? `${r.median.toFixed(3)} (${r.min.toFixed(3)}–${r.max.toFixed(3)})` : "–";
    lines.push(`${basename(row.model).padEnd(28)} ${String(row.threads).padStart(3)} ${ratio.padStart(22)} ` +
      `${`${fixed(row.backendCpuMicrosPerToken, 0)} / ${fixed(row.rawCpuMicrosPerToken, 0)}`.padStart(25)} ` +
      `${`${fixed(row.backendDecodeTps, 1)} / ${fixed(row.rawDecodeTps, 1)}`.padStart(20)}  ${row.verdict}${row.error ? ` (${row.error})` : ""}`);
  }
  const passed = result.rows.filter((r) => r.pass).length;
  lines.push(`${passed} of ${result.rows.length} rows hold the goal; ${Math.round(result.seconds)} s`);
  return lines.join("\n");
}

/** The method in one paragraph and the rows as a markdown table. */
export function ggufBenchTable(result: GgufBenchResult): string[] {
  const L = [
    `Each side in its own process, one at a time, ${result.pairs} backend/raw pairs in alternating order; ` +
      `both pinned to the row's thread count and a ${result.contextSize}-token context; a process decodes greedily ${result.rounds} times ` +
      `${result.tokens} tokens (after a warm-up) and reports its median CPU time (process.cpuUsage, all threads) per token between the first and the last token. ` +
      `Ratio = raw ÷ GgufBackend CPU per token (> 1: GgufBackend spends less); goal ≥ ${result.goal}; NOISY: the pairs spread over more than ` +
      `${GGUF_VS_RAW_MAX_SPREAD}, too wide to tell. Took ${Math.round(result.seconds)} s.`, "",
    "| model | threads | ratio: median (min–max of pairs) | CPU µs/token: GgufBackend / raw | decode tok/s (wall): GgufBackend / raw | goal |",
    "|---|--:|--:|--:|--:|---|",
  ];
  for (const row of result.rows) {
    const r = row.ratio;
    L.push(`| ${basename(row.model)} | ${row.threads} | ${r ? `${r.median.toFixed(3)} (${r.min.toFixed(3)}–${r.max.toFixed(3)})` : "–"} | ` +
      `${fixed(row.backendCpuMicrosPerToken, 0)} / ${fixed(row.rawCpuMicrosPerToken, 0)} | ${fixed(row.backendDecodeTps, 1)} / ${fixed(row.rawDecodeTps, 1)} | ` +
      `${row.verdict}${row.error ? `: ${row.error}` : ""} |`);
  }
  return L;
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      threads: { type: "string" }, pairs: { type: "string" }, rounds: { type: "string" }, tokens: { type: "string" },
      out: { type: "string" }, side: { type: "string" },
    },
  });
  if (values.side) {
    const spec = JSON.parse(values.side) as SideSpec;
    try {
      const result = spec.side === "backend" ? await measureBackend(spec) : await measureRaw(spec);
      process.send!({ ok: true, result });
    } catch (error) {
      process.send!({ ok: false, error: error instanceof Error ? error.message : String(error) });
    }
    process.disconnect();
    return;
  }
  if (!positionals.length) {
    console.error("usage: node dist/bench/gguf.js [--threads 1,2] [--pairs 4] [--rounds 5] [--tokens 64] [--out DIR] model.gguf...");
    process.exit(2);
  }
  const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
  const result = await benchGguf(positionals.map((p) => resolve(p)), {
    ...(values.threads ? { threads: values.threads.split(",").map(Number) } : {}),
    ...(values.pairs ? { pairs: num(values.pairs) } : {}),
    ...(values.rounds ? { rounds: num(values.rounds) } : {}),
    ...(values.tokens ? { tokens: num(values.tokens) } : {}),
    onPair: (row, p) => console.log(`  ${basename(row.model)} ${row.threads} thr, ${p.first} first: ratio ${p.ratio.toFixed(3)} ` +
      `(CPU µs/token ${median(p.backend.cpuMicrosPerToken).toFixed(0)} / ${median(p.raw.cpuMicrosPerToken).toFixed(0)})`),
    onRow: (partial) => {
      if (values.out) console.log(`wrote ${writeGgufBench(resolve(values.out), partial, `node dist/bench/gguf.js ${process.argv.slice(2).join(" ")}`)}.{json,md}`);
    },
  });
  console.log(formatGgufBench(result));
}

/** Writes `<dir>/gguf-vs-raw-<date>.{json,md}` (bench/results). */
function writeGgufBench(dir: string, result: GgufBenchResult, command: string): string {
  mkdirSync(dir, { recursive: true });
  const base = join(dir, `gguf-vs-raw-${new Date().toISOString().slice(0, 10)}`);
  writeFileSync(`${base}.json`, `${JSON.stringify(result, null, 1)}\n`);
  writeFileSync(`${base}.md`, [`# GgufBackend ÷ raw node-llama-cpp, CPU time per decoded token`, "", `Command: \`${command}\``, "", ...ggufBenchTable(result), ""].join("\n"));
  return base;
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href;
if (invokedDirectly) await main();
