/**
 * Concurrent requests on one loaded model: aggregate decode tokens/s at 2, 4, 8 and 16 concurrent
 * requests ÷ one stream, and the time to first token of a request arriving while 7 others decode
 * ÷ the same request alone. Every ratio comes from one run (same process, same minute).
 *
 * Run on its own after `tsc`:  node dist/bench/batching.js [tokens] [--repeats=N] [--blas=linked,openblas] [model ...]
 * Or from a bench runner:      const result = await benchBatching();
 *
 * `--model=<dir>` (repeatable) adds an MLX model directory to the cases.
 * `--blas=a,b`: the MLX cases once per BLAS setting (MLX_NODE_BLAS values, `linked` = unset, libmlx's
 * own; `openblas@2` = with OPENBLAS_NUM_THREADS=2), each in a child process of one round per setting
 * (the switch is read once per process),
 * settings alternating ABBA over the rounds; medians over rounds, ratios of the medians (CPU ratios:
 * median of each round's).
 *
 * Aggregate decode tokens/s: all requests start together on short prompts (4-6 tokens, greedy,
 * ignoreEos, `tokens` each); tokens after each request's first ÷ time from the last request's
 * first token to the last request's end, so prefill is left out. Beside the wall-clock figure, the
 * same tokens ÷ the process's CPU seconds over that window (the machine may be shared: CPU time is
 * what other load disturbs least). Levels run interleaved in every round (1, 2, 4, 8, 16, then again),
 * medians over rounds. Both backends load with maxBatch 16 (requests beyond it queue). The MLX
 * engine batches every request (continuous batching), so a newcomer's first token waits for its
 * prefill and one decode step of the batch. The GGUF newcomer lands on a sequence an earlier request
 * used: node-llama-cpp 3.22.1 erases its state under the context lock, which its batch loop holds
 * while any sequence has decodes queued.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import type { GenerateOptions } from "../lib/backend.js";
import { GgufBackend } from "../lib/backends/gguf.js";
import { MlxBackend, mlxAvailability } from "../lib/backends/mlx.js";
import { packageRoot } from "../lib/native.js";
import { recordDecodeCalls, type DecodeCall } from "./gguf-decode-rows.js";
import { median } from "./stats.js";

const PROMPTS = ["Once upon a time", "Tom and his dog", "The sun was", "A little bird", "Sue had a red ball", "Mom said", "Ben liked to", "The cat sat"];
const LEVELS = [1, 2, 4, 8, 16];

/** One model on one backend. */
export interface BatchingBenchCase {
  backend: "mlx" | "gguf";
  model: string;
  /** Aggregate decode tokens/s by concurrent requests (median over repeats). */
  tokensPerSecond: Record<number, number>;
  /** tokensPerSecond[n] ÷ tokensPerSecond[1]. */
  ratio: Record<number, number>;
  /** The same tokens ÷ process CPU seconds, as a ratio to one stream's (medians). */
  cpuRatio: Record<number, number>;
  /** TTFT of a 64-token request while 7 others decode, and alone (ms, medians). */
  ttftBesideSevenMs: number;
  ttftAloneMs: number;
  /**
   * KV bytes one concurrent row holds. GGUF: one llama.cpp sequence of the whole context, allocated
   * at load. MLX: what a row of this bench holds (its buffers grow in steps of 256 positions, so
   * kvBytesPerToken x 256 here); it grows with the row's length and is freed when the row leaves.
   */
  kvBytesPerRow?: number;
}

export interface BatchingBenchResult {
  tokens: number;
  repeats: number;
  /** The library MLX's CPU matmuls called (runtimeInfo().blas), when MLX ran. */
  blas?: string;
  cases: BatchingBenchCase[];
  skipped: string[];
}

type Backend = MlxBackend | GgufBackend;

interface Throughput {
  wall: number;
  cpu: number;
}

/** Aggregate decode tokens/s (wall and per CPU-second) of `n` requests started together (see the file's header). */
async function aggregate(model: Backend, n: number, tokens: number): Promise<Throughput> {
  const options: GenerateOptions = { maxTokens: tokens, ignoreEos: true };
  const firsts: number[] = [];
  const ends: number[] = [];
  let produced = 0;
  // CPU time of the process (engine thread included) from the last first token to the end.
  let cpuAtStart: NodeJS.CpuUsage | undefined;
  const startsAt = Math.min(n, maxRows(model));
  await Promise.all(Array.from({ length: n }, async (_, i) => {
    let seen = 0;
    for await (const chunk of model.generateStream(`${PROMPTS[i % PROMPTS.length]}${i >= PROMPTS.length ? "," : ""}`, options)) {
      if (seen === 0 && chunk.tokens.length > 0 && firsts.push(performance.now()) === startsAt) cpuAtStart = process.cpuUsage();
      seen += chunk.tokens.length;
    }
    produced += Math.max(0, seen - 1);
    ends.push(performance.now());
  }));
  // Queued requests (beyond the batch) start late: measure from the first first token instead.
  const cpu = process.cpuUsage(cpuAtStart);
  const start = n > maxRows(model) ? Math.min(...firsts) : Math.max(...firsts);
  return { wall: (produced * 1000) / (Math.max(...ends) - start), cpu: (produced * 1e6) / (cpu.user + cpu.system) };
}

function maxRows(model: Backend): number {
  return model instanceof GgufBackend ? model.sequenceInfo.sequences : (model.info?.maxBatch ?? 1);
}

async function newcomerTtft(model: Backend, besides: number): Promise<number> {
  const controller = new AbortController();
  const long = Array.from({ length: besides }, (_, i) => {
    const stream = model.generateStream(PROMPTS[i % PROMPTS.length], { maxTokens: 256, ignoreEos: true, signal: controller.signal });
    const iterator = stream[Symbol.asyncIterator]();
    return { first: iterator.next(), rest: (async () => { await iterator.next(); for (;;) if ((await iterator.next()).done) break; })() };
  });
  await Promise.all(long.map((l) => l.first));
  await new Promise((r) => setTimeout(r, 20));
  // A 64-token prompt unlike the others' (no shared prefix beyond BOS).
  const prompt = Array.from({ length: 16 }, (_, i) => PROMPTS[(i * 3) % PROMPTS.length]).join(" and ");
  const ids = model.tokenize(prompt, { addSpecialTokens: true }).slice(0, 64);
  const result = await model.generate(ids, { maxTokens: 2, ignoreEos: true });
  controller.abort();
  await Promise.all(long.map((l) => l.rest.catch(() => undefined)));
  return result.timings.timeToFirstTokenMs;
}

async function benchCase(backend: "mlx" | "gguf", name: string, path: string, tokens: number, repeats: number): Promise<BatchingBenchCase> {
  const model: Backend = backend === "mlx" ? new MlxBackend() : new GgufBackend();
  // The prompt cache would let repeats reuse each other's prompts: off, every request evaluates its prompt.
  await model.load(path, { maxBatch: 16, promptCacheBytes: 0 });
  try {
    // Warm-up; alone first, so that GGUF's decode-thread measurement (about 40 single-stream tokens) is over.
    await aggregate(model, 1, backend === "gguf" ? 48 : 8);
    await aggregate(model, 2, 8);
    const samples: Record<number, Throughput[]> = {};
    const besides: number[] = [];
    const alone: number[] = [];
    for (let r = 0; r < repeats; r++) {
      for (const n of LEVELS) (samples[n] ??= []).push(await aggregate(model, n, tokens));
      besides.push(await newcomerTtft(model, 7));
      alone.push(await newcomerTtft(model, 0));
    }
    const tokensPerSecond: Record<number, number> = {};
    const ratio: Record<number, number> = {};
    const cpuRatio: Record<number, number> = {};
    const cpu = (n: number) => median(samples[n].map((s) => s.cpu));
    for (const n of LEVELS) tokensPerSecond[n] = median(samples[n].map((s) => s.wall));
    for (const n of LEVELS) ratio[n] = tokensPerSecond[n] / tokensPerSecond[1];
    for (const n of LEVELS) cpuRatio[n] = cpu(n) / cpu(1);
    const kvBytesPerRow = model instanceof GgufBackend ? model.sequenceInfo.kvBytesPerSequence : (model.info?.kvBytesPerToken ?? 0) * 256;
    return { backend, model: name, tokensPerSecond, ratio, cpuRatio, ttftBesideSevenMs: median(besides), ttftAloneMs: median(alone), kvBytesPerRow };
  } finally {
    await model.unload();
  }
}

/** Runs on stories260K (both backends) and the synthetic models that exist (bench/synthetic). */
export async function benchBatching(options: { tokens?: number; repeats?: number; modelsDir?: string; syntheticDir?: string; only?: string[]; mlxOnly?: boolean; models?: string[] } = {}): Promise<BatchingBenchResult> {
  const tokens = options.tokens ?? 64;
  const repeats = options.repeats ?? 3;
  const root = packageRoot();
  const models = options.modelsDir ?? process.env.MLX_NODE_SHARED_MODELS ?? resolve(root, "../shared/models");
  const synthetic = options.syntheticDir ?? join(root, "bench/.models");
  const specs: [("mlx" | "gguf"), string, string][] = [
    ["mlx", "stories260K hf-f32", join(models, "stories260K/hf-f32")],
    ["gguf", "stories260K.gguf", join(models, "stories260K/stories260K.gguf")],
    ["mlx", "smollm2-135m float16 weights (synthetic)", join(synthetic, "smollm2-135m-mlx-float16")],
    ["gguf", "smollm2-135m q4_0 (synthetic)", join(synthetic, "smollm2-135m-q4_0.gguf")],
    ["gguf", "qwen2.5-0.5b q4_0 (synthetic)", join(synthetic, "qwen2.5-0.5b-q4_0.gguf")],
    ...(options.models ?? []).map((dir): ["mlx", string, string] => ["mlx", `${basename(dirname(resolve(dir)))}/${basename(dir)}`, dir]),
  ];
  const mlx = mlxAvailability();
  const cases: BatchingBenchCase[] = [];
  const skipped: string[] = [];
  for (const [backend, name, path] of specs) {
    if (options.only && !options.only.some((o) => `${backend} ${name}`.includes(o))) continue;
    if (options.mlxOnly && backend !== "mlx") continue;
    if (!existsSync(path)) skipped.push(`${backend} ${name}: ${path} not found`);
    else if (backend === "mlx" && !mlx.available) skipped.push(`${backend} ${name}: MLX unavailable (${mlx.reason})`);
    else {
      try {
        cases.push(await benchCase(backend, name, path, tokens, repeats));
      } catch (error) {
        skipped.push(`${backend} ${name}: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
  }
  const blas = mlx.available ? (await MlxBackend.runtimeInfo()).blas.library : undefined;
  return { tokens, repeats, ...(blas ? { blas } : {}), cases, skipped };
}

/**
 * The MLX cases under each BLAS setting (`linked`, `openblas` or a library path; see the file's
 * header): `repeats` rounds, one child process per setting and round.
 */
export async function benchBatchingBlas(settings: readonly string[], options: { tokens?: number; repeats?: number; only?: string[]; models?: string[] } = {}): Promise<BatchingBenchResult> {
  const tokens = options.tokens ?? 64;
  const repeats = options.repeats ?? 3;
  const script = fileURLToPath(import.meta.url);
  const rounds = new Map<string, { blas?: string; results: BatchingBenchResult[] }>(settings.map((s) => [s, { results: [] }]));
  for (let r = 0; r < repeats; r++) {
    for (const setting of r % 2 === 0 ? settings : [...settings].reverse()) {
      const [blas, threads] = setting.split("@");
      const env = { ...process.env, MLX_NODE_BLAS: blas === "linked" ? "" : blas, ...(threads ? { OPENBLAS_NUM_THREADS: threads } : {}) };
      const args = [script, String(tokens), "--repeats=1", "--mlx-only", ...(options.models ?? []).map((m) => `--model=${m}`), ...(options.only ?? [])];
      const { stdout } = await promisify(execFile)(process.execPath, args, { env, maxBuffer: 1 << 24 });
      const result = JSON.parse(stdout.trim().split("\n").at(-1) ?? "") as BatchingBenchResult;
      rounds.get(setting)?.results.push(result);
    }
  }
  const cases: BatchingBenchCase[] = [];
  const skipped = new Set<string>();
  for (const [setting, { results }] of rounds) {
    results.flatMap((res) => res.skipped).forEach((s) => skipped.add(`[BLAS ${setting}] ${s}`));
    const label = `${setting} (${results[0]?.blas?.split("/").at(-1) ?? "?"})`;
    for (const first of results[0]?.cases ?? []) {
      const same = results.map((res) => res.cases.find((c) => c.model === first.model)).filter((c) => c !== undefined);
      const tokensPerSecond: Record<number, number> = {};
      const ratio: Record<number, number> = {};
      const cpuRatio: Record<number, number> = {};
      for (const n of LEVELS) tokensPerSecond[n] = median(same.map((c) => c.tokensPerSecond[n]));
      for (const n of LEVELS) ratio[n] = tokensPerSecond[n] / tokensPerSecond[1];
      for (const n of LEVELS) cpuRatio[n] = median(same.map((c) => c.cpuRatio[n]));
      cases.push({
        ...first, model: `${first.model} BLAS ${label}`, tokensPerSecond, ratio, cpuRatio,
        ttftBesideSevenMs: median(same.map((c) => c.ttftBesideSevenMs)), ttftAloneMs: median(same.map((c) => c.ttftAloneMs)),
      });
    }
  }
  return { tokens, repeats, cases, skipped: [...skipped] };
}

// ---------------------------------------------------------------------------------------------
// GGUF batching settings (issue #13): is 8 concurrent ÷ 1 bound by threads or by the cores?

/** One GGUF load setting: aggregate decode tokens/s alone and at `concurrent`, and the CPU it used. */
export interface GgufBatchSetting {
  /** `threads` load option (both phases), or "default" (GgufBackend's own choice). */
  threads: number | "default";
  /** Threads llama.cpp reported for the context after the runs. */
  contextThreads: number;
  tokensPerSecond: Record<number, number>;
  /** Process CPU ms per generated token, by concurrency (all threads): flat when the batch is free, linear when compute-bound. */
  cpuMsPerToken: Record<number, number>;
  ratio: number;
}

/**
 * GGUF aggregate decode at 1 and `concurrent` requests with each thread setting, interleaved over
 * `repeats` rounds (one load per setting, loaded in turn). CPU time per token tells a compute bound
 * (the same CPU per token at 8 rows as at 1, so aggregate speed cannot grow past the cores) from a
 * bandwidth bound (CPU per token falls as 8 rows share one read of the weights).
 */
export async function benchGgufBatchSettings(path: string, options: { tokens?: number; repeats?: number; concurrent?: number; threads?: (number | "default")[] } = {}): Promise<GgufBatchSetting[]> {
  const tokens = options.tokens ?? 32;
  const concurrent = options.concurrent ?? 8;
  const settings = options.threads ?? ["default", 1, 2];
  const samples = settings.map(() => ({ tps: {} as Record<number, number[]>, cpu: {} as Record<number, number[]>, contextThreads: 0 }));
  for (let r = 0; r < (options.repeats ?? 3); r++) {
    for (const [i, threads] of settings.entries()) {
      const model = new GgufBackend();
      await model.load(path, { maxBatch: concurrent, promptCacheBytes: 0, ...(threads === "default" ? {} : { threads }) });
      try {
        await aggregate(model, 1, 48); // warm-up, and GgufBackend's decode-thread measurement
        for (const n of [1, concurrent]) {
          const cpu = process.cpuUsage();
          const tps = (await aggregate(model, n, tokens)).wall;
          const used = process.cpuUsage(cpu);
          (samples[i].tps[n] ??= []).push(tps);
          (samples[i].cpu[n] ??= []).push((used.user + used.system) / 1000 / (n * tokens));
        }
        samples[i].contextThreads = model.threadCounts.decode;
      } finally {
        await model.unload();
      }
    }
  }
  return settings.map((threads, i) => {
    const tokensPerSecond = { 1: median(samples[i].tps[1]), [concurrent]: median(samples[i].tps[concurrent]) };
    const cpuMsPerToken = { 1: median(samples[i].cpu[1]), [concurrent]: median(samples[i].cpu[concurrent]) };
    return { threads, contextThreads: samples[i].contextThreads, tokensPerSecond, cpuMsPerToken, ratio: tokensPerSecond[concurrent] / tokensPerSecond[1] };
  });
}

export function formatGgufBatchSettings(model: string, rows: GgufBatchSetting[]): string {
  const n = Math.max(...Object.keys(rows[0]?.tokensPerSecond ?? { 1: 0 }).map(Number));
  return [
    `GGUF batching settings on ${model}: aggregate decode tok/s, 1 vs ${n} concurrent (medians), CPU ms per generated token`,
    ...rows.map((r) => `  threads ${String(r.threads).padEnd(7)} (context ${r.contextThreads}): 1x ${r.tokensPerSecond[1].toFixed(1)} tok/s, ${n}x ${r.tokensPerSecond[n].toFixed(1)} tok/s ` +
      `→ ${r.ratio.toFixed(2)}×; CPU ms/token 1x ${r.cpuMsPerToken[1].toFixed(1)}, ${n}x ${r.cpuMsPerToken[n].toFixed(1)}`),
  ].join("\n");
}

// ---------------------------------------------------------------------------------------------
// GGUF decode calls (issue #13): how many rows each llama.cpp decode holds, and what a row costs.

/** One concurrency level: the llama.cpp decodes of its generation steps, over every round. */
export interface GgufDecodeRows {
  concurrent: number;
  /** "rows×count" of the decodes that generated tokens (one token per row), most frequent first. */
  rowsPerDecode: string;
  /** Median process CPU ms of one such decode holding `concurrent` rows. */
  cpuMsPerDecode: number;
  /** cpuMsPerDecode ÷ concurrent. */
  cpuMsPerRow: number;
  /** Process CPU ms per generated token over the whole run (prompts, sampling and JS included), median of rounds. */
  cpuMsPerToken: number;
}

/**
 * Greedy requests at each concurrency level (one load, `maxBatch` the largest level, no prompt
 * cache), levels interleaved in every round: the rows of every llama.cpp decode and its CPU time.
 * A decode's CPU time that grows with its rows as fast as one row's is a batch that saves nothing.
 */
export async function benchGgufDecodeRows(
  path: string, options: { tokens?: number; levels?: number[]; rounds?: number; threads?: number } = {},
): Promise<GgufDecodeRows[]> {
  const tokens = options.tokens ?? 32;
  const levels = options.levels ?? [1, 2, 4, 8, 16];
  const model = new GgufBackend();
  await model.load(path, { maxBatch: Math.max(...levels), promptCacheBytes: 0, threads: options.threads ?? 1 });
  const found = new Map(levels.map((n) => [n, { calls: [] as DecodeCall[], cpuPerToken: [] as number[] }]));
  try {
    const calls = recordDecodeCalls(model);
    const run = (n: number) => Promise.all(Array.from({ length: n }, (_, i) => model.generate(PROMPTS[i % PROMPTS.length], { maxTokens: tokens, ignoreEos: true })));
    await run(1); // warm-up
    for (let r = 0; r < (options.rounds ?? 2); r++) {
      for (const n of levels) {
        calls.length = 0;
        const cpu = process.cpuUsage();
        await run(n);
        const used = process.cpuUsage(cpu);
        found.get(n)!.cpuPerToken.push((used.user + used.system) / 1000 / (n * tokens));
        found.get(n)!.calls.push(...calls.filter((c) => c.tokens === c.rows)); // generation steps, not prompts
      }
    }
  } finally {
    await model.unload();
  }
  return levels.map((n) => {
    const { calls, cpuPerToken } = found.get(n)!;
    const counts = new Map<number, number>();
    for (const c of calls) counts.set(c.rows, (counts.get(c.rows) ?? 0) + 1);
    const full = calls.filter((c) => c.rows === n).map((c) => c.cpuMs);
    const cpuMsPerDecode = full.length ? median(full) : Number.NaN;
    return {
      concurrent: n,
      rowsPerDecode: [...counts].sort((a, b) => b[1] - a[1]).map(([rows, count]) => `${rows}×${count}`).join(" "),
      cpuMsPerDecode, cpuMsPerRow: cpuMsPerDecode / n, cpuMsPerToken: median(cpuPerToken),
    };
  });
}

export function formatGgufDecodeRows(model: string, rows: GgufDecodeRows[]): string {
  return [
    `GGUF decode calls on ${model}: rows per llama.cpp decode (rows×decodes), median CPU ms of a decode holding every row`,
    ...rows.map((r) => `  ${String(r.concurrent).padStart(2)} concurrent: ${r.rowsPerDecode.padEnd(16)} ${r.cpuMsPerDecode.toFixed(1).padStart(6)} ms per decode, ` +
      `${r.cpuMsPerRow.toFixed(2)} per row; ${r.cpuMsPerToken.toFixed(2)} CPU ms per generated token overall`),
  ].join("\n");
}

// ---------------------------------------------------------------------------------------------
// Interleaved conversations (issue #13): two conversations taking turns keep each other's cache.

/** Turn-k time to first token of two interleaved conversations ÷ one conversation alone (goal ≤ 1.2). */
export interface InterleavedResult {
  backend: "mlx" | "gguf";
  model: string;
  turns: number;
  repeats: number;
  /** Median TTFT (ms) of turns 2..turns over every round: one conversation alone, and two taking turns (A1 B1 A2 B2 ...). */
  aloneMs: number;
  interleavedMs: number;
  /** Median over rounds of (interleaved ÷ alone median TTFT in that round): the paired verdict. */
  ratio: number;
  /** Lowest and highest per-round ratio: how far one round can stray on this machine. */
  ratioMin: number;
  ratioMax: number;
  /** The same pairing with the process's CPU ms from request to first token (what other load disturbs least). */
  cpuRatio: number;
  /** Median CPU ms from request to first token at turns 2..turns, alone and interleaved. */
  aloneCpuMs: number;
  interleavedCpuMs: number;
  /** Median prompt tokens evaluated at turns 2..turns, alone and interleaved (only the new turn's tokens when the cache holds). */
  aloneEvaluated: number;
  interleavedEvaluated: number;
  /** Median prompt length at those turns. */
  promptTokens: number;
}

const QUESTIONS = ["What did Lily see in the park?", "Where did Tom go next?", "What did Max do then?", "How did they feel?", "What happened at the end?", "Who came to help?"];

/** Turns 2.. of one run of conversations. */
interface TurnSamples {
  ttft: number[];
  cpu: number[];
  evaluated: number[];
  lengths: number[];
}

/**
 * Conversations as token ids: turn k's prompt is turn k-1's prompt, its answer (16 greedy tokens)
 * and the next question, so a cache that keeps the conversation evaluates only the new tokens.
 * Each conversation starts with a different opening, so they share nothing but BOS. Every round
 * runs one conversation alone, two interleaved, then another alone (as many alone turns as
 * interleaved ones, on both sides of them), and the verdict is the median of the rounds' ratios: on a
 * shared machine the load drifts over seconds, and an unpaired median of a few rounds strays by ±50%.
 */
export async function benchInterleaved(backend: "mlx" | "gguf", name: string, path: string, options: { turns?: number; repeats?: number } = {}): Promise<InterleavedResult> {
  const turns = options.turns ?? 6;
  const repeats = options.repeats ?? 3;
  const model: Backend = backend === "mlx" ? new MlxBackend() : new GgufBackend();
  await model.load(path);
  try {
    const opening = (tag: string) => model.tokenize(`${tag}. ${PROMPTS.join(". ")}. ${PROMPTS.slice().reverse().join(". ")}.`, { addSpecialTokens: true });
    // Runs the conversations' turns in the given order; adds turns 2.. of every conversation to `out`.
    const run = async (tags: string[], out: TurnSamples = { ttft: [], cpu: [], evaluated: [], lengths: [] }): Promise<TurnSamples> => {
      const history = tags.map(opening);
      for (let turn = 0; turn < turns; turn++) {
        for (const [c, ids] of history.entries()) {
          const before = process.cpuUsage();
          let cpuToFirst: NodeJS.CpuUsage | undefined;
          const stream = model.generateStream(ids, { maxTokens: 16, temperature: 0, ignoreEos: true });
          for await (const chunk of stream) if (chunk.tokens.length > 0) cpuToFirst ??= process.cpuUsage(before);
          const result = await stream.result;
          if (turn > 0) {
            out.ttft.push(result.timings.timeToFirstTokenMs);
            out.cpu.push(cpuToFirst ? (cpuToFirst.user + cpuToFirst.system) / 1000 : Number.NaN);
            out.evaluated.push(result.usage.evaluatedPromptTokens);
            out.lengths.push(ids.length);
          }
          history[c] = [...ids, ...result.tokens, ...model.tokenize(` ${QUESTIONS[turn % QUESTIONS.length]} `)];
        }
      }
      return out;
    };
    await run(["Warm-up"]);
    await run(["Warm-up first", "Warm-up second"]);
    const alone: TurnSamples[] = [];
    const interleaved: TurnSamples[] = [];
    for (let r = 0; r < repeats; r++) {
      const aloneRound = await run([`Story ${r} alone`]);
      interleaved.push(await run([`Story ${r} first`, `Story ${r} second`]));
      alone.push(await run([`Story ${r} alone again`], aloneRound));
    }
    const pooled = (runs: TurnSamples[], key: keyof TurnSamples) => median(runs.flatMap((s) => s[key]));
    const ratios = alone.map((a, r) => median(interleaved[r].ttft) / median(a.ttft));
    const cpuRatios = alone.map((a, r) => median(interleaved[r].cpu) / median(a.cpu));
    return {
      backend, model: name, turns, repeats,
      aloneMs: pooled(alone, "ttft"), interleavedMs: pooled(interleaved, "ttft"),
      ratio: median(ratios), ratioMin: Math.min(...ratios), ratioMax: Math.max(...ratios), cpuRatio: median(cpuRatios),
      aloneCpuMs: pooled(alone, "cpu"), interleavedCpuMs: pooled(interleaved, "cpu"),
      aloneEvaluated: pooled(alone, "evaluated"), interleavedEvaluated: pooled(interleaved, "evaluated"),
      promptTokens: pooled(interleaved, "lengths"),
    };
  } finally {
    await model.unload();
  }
}

export function formatInterleaved(rows: InterleavedResult[]): string {
  return [
    "Interleaved conversations: TTFT of turns 2.. (medians), two conversations taking turns ÷ one alone (goal ≤ 1.2), median of paired rounds",
    ...rows.map((r) => `  ${`${r.backend} ${r.model}`.padEnd(40)} alone ${r.aloneMs.toFixed(1)} ms, interleaved ${r.interleavedMs.toFixed(1)} ms; ` +
      `${r.repeats} rounds ${r.ratio.toFixed(2)}× (rounds ${r.ratioMin.toFixed(2)}–${r.ratioMax.toFixed(2)}) ${r.ratio <= 1.2 ? "PASS" : "FAIL"}; ` +
      `CPU ms to first token ${r.aloneCpuMs.toFixed(1)} / ${r.interleavedCpuMs.toFixed(1)} → ${r.cpuRatio.toFixed(2)}×; ` +
      `evaluated ${r.aloneEvaluated} alone, ${r.interleavedEvaluated} interleaved, of ${r.promptTokens} prompt tokens`),
  ].join("\n");
}

/** Human-readable summary of a {@link BatchingBenchResult}. */
export function formatBatchingBench(result: BatchingBenchResult): string {
  const lines = [
    `batching bench: ${result.tokens} greedy tokens per request, medians of ${result.repeats}; aggregate decode tok/s (÷ one stream)` +
      (result.blas ? `; MLX BLAS ${result.blas}` : ""),
    `${"case".padEnd(48)} ${LEVELS.map((n) => `${n}x`.padStart(15)).join(" ")} ${"TTFT +7 / alone".padStart(22)} ${"KV/row".padStart(9)}  per CPU-second (÷ one stream)`,
    ...result.cases.map((c) =>
      `${`${c.backend} ${c.model}`.padEnd(48)} ${LEVELS.map((n) => `${c.tokensPerSecond[n].toFixed(0)} (${c.ratio[n].toFixed(2)})`.padStart(15)).join(" ")} ` +
      `${`${c.ttftBesideSevenMs.toFixed(1)} / ${c.ttftAloneMs.toFixed(1)} ms`.padStart(22)} ` +
      `${c.kvBytesPerRow !== undefined ? `${(c.kvBytesPerRow / 2 ** 20).toFixed(1)} MiB` : "n/a"}`.padStart(9) +
      `  ${LEVELS.slice(1).map((n) => `${n}x ${c.cpuRatio[n].toFixed(2)}`).join(", ")}`),
    ...result.skipped.map((s) => `skipped: ${s}`),
  ];
  return lines.join("\n");
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href;
if (invokedDirectly) {
  const args = process.argv.slice(2);
  const repeats = args.find((a) => a.startsWith("--repeats="));
  const blas = args.find((a) => a.startsWith("--blas="));
  const mlxOnly = args.includes("--mlx-only");
  const models = args.filter((a) => a.startsWith("--model=")).map((a) => a.slice(8));
  const [tokens, ...only] = args.filter((a) => a !== repeats && a !== blas && a !== "--mlx-only" && !a.startsWith("--model="));
  const options = {
    ...(tokens ? { tokens: Number(tokens) } : {}), ...(only.length ? { only } : {}), ...(repeats ? { repeats: Number(repeats.slice(10)) } : {}),
    ...(models.length ? { models } : {}),
  };
  const result = blas ? await benchBatchingBlas(blas.slice(7).split(","), options) : await benchBatching({ ...options, mlxOnly });
  console.log(formatBatchingBench(result));
  console.log(JSON.stringify(result));
}
