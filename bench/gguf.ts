/**
 * GGUF benchmark: GgufBackend with its default options against raw node-llama-cpp on the same
 * file, in the same process, interleaved (every repeat runs every configuration, in a rotating
 * order), reporting medians and the backend/raw ratio.
 *
 * Run on its own after `tsc`:  node dist/bench/gguf.js path/to/model.gguf [repeats]
 * Or from a bench runner:      const result = await benchGguf(path);
 *
 * Definitions, identical for both sides and measured where a caller sees the tokens:
 * - prefill tokens/s: evaluated prompt tokens / time from the request to the first generated
 *   token. The prompt (default 512 tokens) differs from the cached one right after BOS, so both
 *   sides evaluate the same `prefillTokens - 1` tokens.
 * - decode tokens/s: tokens after the first / time from the first to the last token, greedy,
 *   `decodeTokens` (default 256) tokens. For the backend that includes detokenization and
 *   stop-string handling, as a user of `generateStream` sees it.
 */
import { availableParallelism } from "node:os";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { LlamaContextSequence, LlamaModel, Token } from "node-llama-cpp";
import { GgufBackend } from "../lib/backends/gguf.js";
import { median } from "./stats.js";

/** Options of {@link benchGguf}. */
export interface GgufBenchOptions {
  /** Measurements per configuration (medians are reported). Defaults to 7; at least 1. */
  repeats?: number;
  /** Tokens generated per decode measurement. Defaults to 256. */
  decodeTokens?: number;
  /** Prompt tokens per prefill measurement. Defaults to 512. */
  prefillTokens?: number;
  /** Thread counts tried for raw node-llama-cpp. Defaults to 1 and 2 (capped at the available cores). */
  rawThreads?: number[];
  /** Prompt for decode measurements. Defaults to "Once upon a time". */
  prompt?: string;
}

/** Medians and raw samples of one configuration. */
export interface GgufBenchSeries {
  /** Median decode speed in tokens/s. */
  decodeTokensPerSecond: number;
  /** Median prefill speed in tokens/s. */
  prefillTokensPerSecond: number;
  /** Every decode sample, in run order. */
  decodeSamples: number[];
  /**
   * Median process CPU time (all threads: main + llama.cpp) per generated token in µs, over the
   * decode measurements. Less sensitive than tokens/s to other load on a shared machine.
   */
  decodeCpuMicrosPerToken: number;
  /** Every prefill sample, in run order. */
  prefillSamples: number[];
  /** Threads used (for GgufBackend: its decode threads). */
  threads: number;
  /** GgufBackend only: its prefill threads, when they differ from decode's. */
  prefillThreads?: number;
  /**
   * True when the configuration's decode was measured only once, in the first round, because it
   * ran at less than a quarter of the best speed (on small machines extra threads can be 10-100×
   * slower, which would make the benchmark take minutes without changing which setting is best).
   * Its prefill is still measured in every round.
   */
  pruned?: boolean;
}

/** Result of {@link benchGguf}. */
export interface GgufBenchResult {
  model: string;
  repeats: number;
  decodeTokens: number;
  prefillTokens: number;
  /** GgufBackend with default load options. */
  backend: GgufBenchSeries;
  /** Raw node-llama-cpp, one entry per thread count tried. */
  raw: GgufBenchSeries[];
  /** The raw setting with the best median decode speed: "raw node-llama-cpp at its best thread setting" for decode. */
  bestRaw: GgufBenchSeries;
  /** The raw setting with the best median prefill speed (prefill may prefer another thread count). */
  bestPrefillRaw: GgufBenchSeries;
  /** backend / the best raw setting of each metric, as a ratio of medians (goal: ≥ 0.98). */
  ratio: { decode: number; prefill: number };
  /**
   * Median over repeats of backend / the same best raw setting measured in the same repeat (back
   * to back), which cancels slow drifts of a shared machine.
   */
  pairedRatio: { decode: number; prefill: number };
}

interface Side {
  threads: number;
  prefillThreads?: number;
  prefill(prompt: number[]): Promise<number>;
  decode(prompt: number[], tokens: number): Promise<number>;
  close(): Promise<void>;
  samples: { decode: number[]; prefill: number[]; decodeCpu: number[] };
  pruned: boolean;
}

/**
 * Benchmarks GgufBackend (default options) against raw node-llama-cpp on `modelPath`.
 * @param modelPath a `.gguf` file.
 */
export async function benchGguf(modelPath: string, options: GgufBenchOptions = {}): Promise<GgufBenchResult> {
  const repeats = Math.max(1, Math.floor(options.repeats ?? 7));
  const decodeTokens = Math.max(2, Math.floor(options.decodeTokens ?? 256));
  const prefillTokens = Math.max(4, Math.floor(options.prefillTokens ?? 512));
  const rawThreads = [...new Set((options.rawThreads ?? [1, 2]).map((t) => Math.max(1, Math.min(t, availableParallelism()))))];

  const backend = new GgufBackend();
  await backend.load(modelPath);
  const sides: Side[] = [];
  try {
    const decodePrompt = backend.tokenize(options.prompt ?? "Once upon a time", { addSpecialTokens: true });
    const filler = backend.tokenize(" Once upon a time, there was a little girl named Lily. She loved to play outside in the park.");
    const bos = decodePrompt[0];
    // Prefill prompts: [BOS, varying token, filler...]. The backend's cache then holds the decode
    // prompt (or nothing), so only BOS is reused and both sides evaluate prefillTokens - 1 tokens.
    const second = filler.filter((t) => t !== decodePrompt[1]);
    let variant = 0;
    const prefillPrompt = (): number[] => {
      const ids = [bos, second[variant++ % second.length]];
      while (ids.length < prefillTokens) ids.push(...filler);
      return ids.slice(0, prefillTokens);
    };
    if (prefillTokens >= backend.contextSize || decodePrompt.length + decodeTokens > backend.contextSize) {
      throw new Error(`prefillTokens/decodeTokens do not fit the context (${backend.contextSize} tokens)`);
    }

    // GgufBackend times its first generated tokens to choose its decode threads; like a user's
    // first request, that happens before the measurements.
    for (let i = 0; i < 4 && !backend.decodeThreadsMeasured; i++) {
      await backend.generate(decodePrompt, { maxTokens: 32, temperature: 0, ignoreEos: true });
    }
    sides.push(backendSide(backend));
    const lib = await import("node-llama-cpp");
    const llama = await lib.getLlama({
      gpu: false, build: "never", skipDownload: true, progressLogs: false, maxThreads: 0, logLevel: lib.LlamaLogLevel.error,
    });
    for (const threads of rawThreads) {
      const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
      sides.push(await rawSide(model, threads, backend.contextSize));
    }

    for (let r = 0; r < repeats; r++) {
      // Rotate the order so no configuration always runs first (or right after another).
      const order = sides.map((_, i) => sides[(i + r) % sides.length]);
      for (const side of order) {
        await cooldown();
        side.samples.prefill.push(await side.prefill(prefillPrompt()));
        if (side.pruned) continue;
        await cooldown();
        const cpu = process.cpuUsage();
        side.samples.decode.push(await side.decode(decodePrompt, decodeTokens));
        const used = process.cpuUsage(cpu);
        side.samples.decodeCpu.push((used.user + used.system) / decodeTokens);
      }
      if (r === 0) {
        const best = Math.max(...sides.map((s) => s.samples.decode[0]));
        for (const side of sides.slice(1)) if (side.samples.decode[0] < best / 4) side.pruned = true;
      }
    }

    const series = sides.map(toSeries);
    const [own, ...raw] = series;
    const bestRaw = raw.reduce((a, b) => (b.decodeTokensPerSecond > a.decodeTokensPerSecond ? b : a));
    const bestPrefillRaw = raw.reduce((a, b) => (b.prefillTokensPerSecond > a.prefillTokensPerSecond ? b : a));
    const paired = (mine: number[], theirs: number[]) => median(mine.map((v, i) => v / theirs[i]).filter(Number.isFinite));
    return {
      model: modelPath,
      repeats,
      decodeTokens,
      prefillTokens,
      backend: own,
      raw,
      bestRaw,
      bestPrefillRaw,
      ratio: {
        decode: own.decodeTokensPerSecond / bestRaw.decodeTokensPerSecond,
        prefill: own.prefillTokensPerSecond / bestPrefillRaw.prefillTokensPerSecond,
      },
      pairedRatio: {
        decode: paired(own.decodeSamples, bestRaw.decodeSamples),
        prefill: paired(own.prefillSamples, bestPrefillRaw.prefillSamples),
      },
    };
  } finally {
    for (const side of sides) await side.close();
    await backend.unload();
  }
}

function backendSide(backend: GgufBackend): Side {
  return {
    threads: backend.threadCounts.decode,
    ...(backend.threadCounts.prefill !== backend.threadCounts.decode ? { prefillThreads: backend.threadCounts.prefill } : {}),
    samples: { decode: [], prefill: [], decodeCpu: [] },
    pruned: false,
    async prefill(prompt) {
      const start = performance.now();
      const stream = backend.generateStream(prompt, { maxTokens: 1 });
      let first = 0;
      for await (const _ of stream) if (!first) first = performance.now();
      const { usage } = await stream.result;
      return (usage.evaluatedPromptTokens / (first - start)) * 1000;
    },
    async decode(prompt, tokens) {
      const stream = backend.generateStream(prompt, { maxTokens: tokens, temperature: 0 });
      let first = 0;
      let last = 0;
      let afterFirst = 0;
      for await (const chunk of stream) {
        if (chunk.tokens.length === 0) continue;
        last = performance.now();
        if (first) afterFirst += chunk.tokens.length;
        else first = last;
      }
      await stream.result;
      return (afterFirst / (last - first)) * 1000;
    },
    async close() {},
  };
}

async function rawSide(model: LlamaModel, threads: number, contextSize: number): Promise<Side> {
  const context = await model.createContext({ contextSize, threads, sequences: 1 });
  const sequence: LlamaContextSequence = context.getSequence();
  const reset = async (keep: number[]) => {
    await sequence.clearHistory();
    if (keep.length) await sequence.evaluateWithoutGeneratingNewTokens(keep as Token[]);
  };
  return {
    threads: context.currentThreads,
    samples: { decode: [], prefill: [], decodeCpu: [] },
    pruned: false,
    async prefill(prompt) {
      await reset(prompt.slice(0, 1)); // BOS stays cached, as in the backend
      const start = performance.now();
      const tokens = sequence.evaluate(prompt.slice(1) as Token[], { temperature: 0 });
      await tokens.next();
      const first = performance.now();
      await tokens.return();
      return ((prompt.length - 1) / (first - start)) * 1000;
    },
    async decode(prompt, count) {
      await reset([]);
      let first = 0;
      let last = 0;
      let n = 0;
      for await (const _ of sequence.evaluate(prompt as Token[], { temperature: 0 })) {
        last = performance.now();
        if (!first) first = last;
        if (++n >= count) break;
      }
      return ((n - 1) / (last - first)) * 1000;
    },
    async close() {
      await context.dispose();
      await model.dispose();
    },
  };
}

function toSeries(side: Side): GgufBenchSeries {
  return {
    decodeTokensPerSecond: median(side.samples.decode),
    prefillTokensPerSecond: median(side.samples.prefill),
    decodeSamples: side.samples.decode,
    decodeCpuMicrosPerToken: median(side.samples.decodeCpu),
    prefillSamples: side.samples.prefill,
    threads: side.threads,
    ...(side.prefillThreads !== undefined ? { prefillThreads: side.prefillThreads } : {}),
    ...(side.pruned ? { pruned: true } : {}),
  };
}

/**
 * Pause between measurements: after a multi-threaded evaluation, ggml's worker threads keep
 * spinning for a while and would slow down whichever configuration runs next.
 */
function cooldown(): Promise<void> {
  return new Promise((r) => setTimeout(r, 50));
}


/** Human-readable summary of a {@link GgufBenchResult}. */
export function formatGgufBench(result: GgufBenchResult): string {
  const row = (label: string, s: GgufBenchSeries) =>
    `${label.padEnd(46)} ${s.decodeTokensPerSecond.toFixed(1).padStart(9)} ${s.prefillTokensPerSecond.toFixed(1).padStart(10)}` +
    ` ${s.decodeCpuMicrosPerToken.toFixed(0).padStart(12)}${s.pruned ? "   (decode measured once: too slow)" : ""}`;
  return [
    `GGUF bench: ${result.model}`,
    `${result.repeats} interleaved repeats, decode ${result.decodeTokens} tokens, prefill ${result.prefillTokens} tokens (medians, tokens/s)`,
    `${"".padEnd(46)} ${"decode".padStart(9)} ${"prefill".padStart(10)} ${"CPU µs/token".padStart(12)}`,
    row(`GgufBackend (default, ${result.backend.prefillThreads !== undefined ? `prefill ${result.backend.prefillThreads}, decode ` : ""}${result.backend.threads} thr)`, result.backend),
    ...result.raw.map((s) => row(`raw node-llama-cpp (${s.threads} thr)`, s)),
    `ratio vs best raw: decode ${result.ratio.decode.toFixed(3)} (raw ${result.bestRaw.threads} thr), prefill ${result.ratio.prefill.toFixed(3)} ` +
      `(raw ${result.bestPrefillRaw.threads} thr); median of paired runs: decode ${result.pairedRatio.decode.toFixed(3)}, prefill ${result.pairedRatio.prefill.toFixed(3)}`,
  ].join("\n");
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href;
if (invokedDirectly) {
  const [path, repeats] = process.argv.slice(2);
  if (!path) {
    console.error("usage: node dist/bench/gguf.js <model.gguf> [repeats]");
    process.exit(2);
  }
  const result = await benchGguf(path, repeats ? { repeats: Number(repeats) } : {});
  console.log(formatGgufBench(result));
  console.log(JSON.stringify(result));
}
