/**
 * Cost of `jsonSchema` constrained decoding: per-token time with the constraint against plain
 * sampling on the same model, in the same process, interleaved (every repeat runs both, in a
 * rotating order), at temperature 1 with the same seeds. Cases: MLX on a tiny random model and
 * on stories260K, GGUF on stories260K.gguf; plus the constraint's own JS cost on 32k and 128k
 * vocabularies (no model), where building the masks of new states is the expensive part.
 *
 * Run on its own after `tsc`:  node dist/bench/json-schema.js [repeats]
 * Or from a bench runner:      const result = await benchJsonSchema();
 *
 * Definitions:
 * - ms/token: decode time per token after the first (1000 / `timings.generatedTokensPerSecond`),
 *   wall clock, as a caller of `generate` sees it; masks and detokenization included.
 * - CPU µs/token: process CPU time (all threads) of the whole request / generated tokens; less
 *   sensitive than wall time to other load on a shared machine.
 * - ratio: constrained / unconstrained ms/token (medians); pairedRatio: median over repeats of
 *   the ratio of the two back-to-back runs.
 * The unconstrained runs ignore EOS so both sides generate about `maxTokens` tokens (the random
 * models write long strings, which the constraint closes when the budget gets tight).
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { GenerateOptions, InferenceBackend } from "../lib/backend.js";
import { GgufBackend } from "../lib/backends/gguf.js";
import { MlxBackend, mlxAvailability } from "../lib/backends/mlx.js";
import type { JsonSchema } from "../lib/json-schema/validate.js";
import { JsonGenerationDriver } from "../lib/json-schema/driver.js";
import { compileJsonSchema } from "../lib/json-schema/schema.js";
import { TokenConstraint } from "../lib/json-schema/token-constraint.js";
import { vocabularyFromTokenizer } from "../lib/json-schema/vocab.js";
import { packageRoot } from "../lib/native.js";
import { Tokenizer } from "../lib/tokenizer.js";
import { writeTinyModel } from "../tests/reference/tiny-models.js";
import { median } from "./stats.js";

/** The schema every case generates. */
export const BENCH_SCHEMA: JsonSchema = {
  type: "object",
  properties: {
    name: { type: "string" },
    age: { type: "integer" },
    tags: { type: "array", items: { type: "string", enum: ["red", "green", "blue"] } },
    address: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
  required: ["name", "age"],
};

/** Options of {@link benchJsonSchema}. */
export interface JsonSchemaBenchOptions {
  /** Measured pairs per case (medians are reported). Defaults to 11 (fewer are noisy on a shared 2-core machine). */
  repeats?: number;
  /** maxTokens of every run. Defaults to 128. */
  maxTokens?: number;
  /** Directory of the shared models (stories260K, tokenizers). Defaults to $MLX_NODE_SHARED_MODELS, else ../shared/models next to the package. */
  modelsDir?: string;
}

/** One model on one backend. */
export interface JsonSchemaBenchCase {
  backend: "mlx" | "gguf";
  model: string;
  /** Median generated tokens per run. */
  tokens: { constrained: number; unconstrained: number };
  /** Median decode ms per token. */
  msPerToken: { constrained: number; unconstrained: number };
  /** Median process CPU µs per generated token. */
  cpuMicrosPerToken: { constrained: number; unconstrained: number };
  /** Constrained / unconstrained ms per token, as a ratio of medians. */
  ratio: number;
  /** Median over repeats of the back-to-back ratio. */
  pairedRatio: number;
  /** Constrained / unconstrained CPU per token. */
  cpuRatio: number;
  /** MLX: median JS-thread ms per token spent computing masks (overlaps the forward pass). */
  maskComputeMsPerToken?: number;
  /** MLX: median ms per token the engine waited for a mask (what the overlap did not hide). */
  maskWaitMsPerToken?: number;
  /** Duration of the first constrained request, which builds the constraint. */
  firstRequestMs: number;
}

/** The constraint alone on a real vocabulary, walking the tokens of a valid document. */
export interface JsonSchemaVocabularyCost {
  tokenizer: string;
  vocabSize: number;
  /** Reading token bytes plus building the vocabulary trie, once per loaded model. */
  setupMs: number;
  /** First request: masks of every newly visited state (the slowest state in `maxStateMs`). */
  firstPassMs: number;
  maxStateMs: number;
  /** Later requests: µs per token (cached masks). */
  cachedMicrosPerToken: number;
}

/** Result of {@link benchJsonSchema}. */
export interface JsonSchemaBenchResult {
  repeats: number;
  maxTokens: number;
  cases: JsonSchemaBenchCase[];
  vocabularies: JsonSchemaVocabularyCost[];
  /** Cases not run, with the reason. */
  skipped: string[];
}

interface Run {
  msPerToken: number;
  cpuMicrosPerToken: number;
  tokens: number;
  maskComputeMs?: number;
  maskWaitMs?: number;
}

/** Measures constrained against unconstrained decoding on every available case. */
export async function benchJsonSchema(options: JsonSchemaBenchOptions = {}): Promise<JsonSchemaBenchResult> {
  const repeats = Math.max(1, options.repeats ?? 11);
  const maxTokens = options.maxTokens ?? 128;
  const models = options.modelsDir ?? process.env.MLX_NODE_SHARED_MODELS ?? resolve(packageRoot(), "../shared/models");
  const result: JsonSchemaBenchResult = { repeats, maxTokens, cases: [], vocabularies: [], skipped: [] };
  const stories = join(models, "stories260K");

  const mlx = mlxAvailability();
  if (mlx.available) {
    const tmp = mkdtempSync(join(tmpdir(), "mlx-node-json-bench-"));
    try {
      writeTinyModel(join(tmp, "tiny"), { family: "llama", dtype: "float32", seed: 3 });
      result.cases.push(await measure("mlx", "tiny random llama (vocab 512)", () => new MlxBackend(), join(tmp, "tiny"), repeats, maxTokens));
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    if (existsSync(join(stories, "hf-f32"))) {
      result.cases.push(await measure("mlx", "stories260K hf-f32", () => new MlxBackend(), join(stories, "hf-f32"), repeats, maxTokens));
    } else result.skipped.push(`mlx stories260K: ${join(stories, "hf-f32")} not found`);
  } else result.skipped.push(`mlx: ${mlx.reason}`);
  if (existsSync(join(stories, "stories260K.gguf"))) {
    result.cases.push(await measure("gguf", "stories260K.gguf", () => new GgufBackend(), join(stories, "stories260K.gguf"), repeats, maxTokens));
  } else result.skipped.push(`gguf stories260K: ${join(stories, "stories260K.gguf")} not found`);

  for (const name of ["llama2", "llama3.2-reconstructed"]) {
    const dir = join(models, "tokenizers", name);
    if (existsSync(join(dir, "tokenizer.json"))) result.vocabularies.push(await vocabularyCost(name, dir));
    else result.skipped.push(`vocabulary ${name}: ${dir} not found`);
  }
  return result;
}

async function measure(
  backendName: "mlx" | "gguf", model: string, create: () => InferenceBackend, path: string, repeats: number, maxTokens: number,
): Promise<JsonSchemaBenchCase> {
  const backend = create();
  await backend.load(path);
  try {
    const run = (constrained: boolean, seed: number) => timedRun(backend, constrained, { temperature: 1, seed, maxTokens });
    const first = performance.now();
    await run(true, 0); // builds the constraint: reported, not measured
    const firstRequestMs = performance.now() - first;
    await run(false, 0);
    const json: Run[] = [];
    const free: Run[] = [];
    for (let r = 1; r <= repeats; r++) {
      // Rotating order, so a drift of the machine's load does not favour one side.
      if (r % 2) {
        json.push(await run(true, r));
        free.push(await run(false, r));
      } else {
        free.push(await run(false, r));
        json.push(await run(true, r));
      }
    }
    const m = (runs: Run[], key: keyof Run) => median(runs.map((x) => x[key] ?? Number.NaN));
    const perToken = (runs: Run[], key: "maskComputeMs" | "maskWaitMs") => median(runs.map((x) => (x[key] ?? Number.NaN) / x.tokens));
    return {
      backend: backendName,
      model,
      tokens: { constrained: m(json, "tokens"), unconstrained: m(free, "tokens") },
      msPerToken: { constrained: m(json, "msPerToken"), unconstrained: m(free, "msPerToken") },
      cpuMicrosPerToken: { constrained: m(json, "cpuMicrosPerToken"), unconstrained: m(free, "cpuMicrosPerToken") },
      ratio: m(json, "msPerToken") / m(free, "msPerToken"),
      pairedRatio: median(json.map((x, i) => x.msPerToken / free[i].msPerToken)),
      cpuRatio: m(json, "cpuMicrosPerToken") / m(free, "cpuMicrosPerToken"),
      ...(backendName === "mlx" ? { maskComputeMsPerToken: perToken(json, "maskComputeMs"), maskWaitMsPerToken: perToken(json, "maskWaitMs") } : {}),
      firstRequestMs,
    };
  } finally {
    await backend.unload();
  }
}

async function timedRun(backend: InferenceBackend, constrained: boolean, options: GenerateOptions): Promise<Run> {
  const cpu = process.cpuUsage();
  const r = await backend.generate("Once upon a time", { ...options, ...(constrained ? { jsonSchema: BENCH_SCHEMA } : { ignoreEos: true }) });
  const used = process.cpuUsage(cpu);
  const run: Run = {
    msPerToken: r.timings.generatedTokensPerSecond > 0 ? 1000 / r.timings.generatedTokensPerSecond : Number.NaN,
    cpuMicrosPerToken: (used.user + used.system) / Math.max(1, r.tokens.length),
    tokens: r.tokens.length,
  };
  if (constrained && backend instanceof MlxBackend) {
    run.maskComputeMs = backend.lastMaskComputeMs;
    run.maskWaitMs = backend.lastGenerationStats?.maskWaitMs;
  }
  await new Promise((r) => setTimeout(r, 20)); // let worker threads settle between runs
  return run;
}

async function vocabularyCost(name: string, dir: string): Promise<JsonSchemaVocabularyCost> {
  const tokenizer = await Tokenizer.fromDirectory(dir);
  const start = performance.now();
  const vocab = await vocabularyFromTokenizer(tokenizer, tokenizer.vocabSize);
  const constraint = new TokenConstraint(compileJsonSchema(BENCH_SCHEMA), vocab);
  const setupMs = performance.now() - start;
  const ids = tokenizer.encode('{"name": "Ada Lovelace", "age": 36, "tags": ["red", "blue"], "address": {"city": "London"}}');
  const pass = (): number[] => {
    const driver = new JsonGenerationDriver(constraint, 1000);
    return ids.map((id) => {
      const t = performance.now();
      driver.mask();
      const ms = performance.now() - t;
      driver.push(id);
      return ms;
    });
  };
  const first = pass();
  const cached: number[] = [];
  for (let i = 0; i < 20; i++) cached.push(pass().reduce((a, b) => a + b, 0) / ids.length);
  return {
    tokenizer: name,
    vocabSize: vocab.size,
    setupMs,
    firstPassMs: first.reduce((a, b) => a + b, 0),
    maxStateMs: Math.max(...first),
    cachedMicrosPerToken: median(cached) * 1000,
  };
}



/** Human-readable summary of a {@link JsonSchemaBenchResult}. */
export function formatJsonSchemaBench(result: JsonSchemaBenchResult): string {
  const f = (v: number | undefined, d = 3) => (v === undefined || Number.isNaN(v) ? "-" : v.toFixed(d));
  const lines = [
    `jsonSchema bench: ${result.repeats} interleaved pairs per case, maxTokens ${result.maxTokens}, temperature 1 (medians)`,
    `${"case".padEnd(40)} ${"ms/tok json".padStart(11)} ${"ms/tok free".padStart(11)} ${"ratio".padStart(6)} ${"paired".padStart(6)} ${"cpu".padStart(6)} ${"mask ms/tok".padStart(11)} ${"wait ms/tok".padStart(11)} ${"1st req ms".padStart(10)}`,
    ...result.cases.map((c) =>
      `${`${c.backend} ${c.model}`.padEnd(40)} ${f(c.msPerToken.constrained).padStart(11)} ${f(c.msPerToken.unconstrained).padStart(11)} ` +
      `${f(c.ratio).padStart(6)} ${f(c.pairedRatio).padStart(6)} ${f(c.cpuRatio).padStart(6)} ${f(c.maskComputeMsPerToken).padStart(11)} ` +
      `${f(c.maskWaitMsPerToken).padStart(11)} ${f(c.firstRequestMs, 0).padStart(10)}`),
    ...result.vocabularies.map((v) =>
      `constraint alone, ${v.tokenizer} (${v.vocabSize} tokens): setup ${f(v.setupMs, 0)} ms, first request ${f(v.firstPassMs, 0)} ms ` +
      `(slowest new state ${f(v.maxStateMs, 0)} ms), then ${f(v.cachedMicrosPerToken, 1)} µs/token`),
    ...result.skipped.map((s) => `skipped: ${s}`),
  ];
  return lines.join("\n");
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href;
if (invokedDirectly) {
  const repeats = process.argv[2];
  const result = await benchJsonSchema(repeats ? { repeats: Number(repeats) } : {});
  console.log(formatJsonSchemaBench(result));
  console.log(JSON.stringify(result));
}
