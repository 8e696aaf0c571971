/**
 * Constraint compile time and per-token JS cost of `jsonSchema` on a 49k-token vocabulary
 * (starcoder's BPE, the vocabulary of SmolLM/SmolLM2, from ggml-vocab-starcoder.gguf), over the
 * schema corpus of tests/support/schema-corpus.ts. No model: this is the constraint's own cost.
 *
 * - compile: compileJsonSchema + the token constraint + the first state's mask (what a request
 *   with a new schema waits for before its first token), cold caches, p50/p95 over the corpus;
 * - per token: mask + advance along random valid walks (256 tokens per schema, budget-aware),
 *   i.e. the JS work added to each decode step, which MLX overlaps with the forward pass;
 * - worst case at the bound: an enum of 4096 strings (SCHEMA_LIMITS.enumValues);
 * - on models (stories260K, both backends): decode ms per token with a schema against without,
 *   interleaved, same seeds, 64 tokens (the schema is a long-string object the model keeps writing).
 *
 * Run after `tsc`: node dist/bench/json-schema-compile.js
 */
import { readGgufFileInfo } from "node-llama-cpp";
import type { InferenceBackend } from "../lib/backend.js";
import { GgufBackend } from "../lib/backends/gguf.js";
import { MlxBackend, mlxAvailability } from "../lib/backends/mlx.js";
import { JsonGenerationDriver } from "../lib/json-schema/driver.js";
import { compileJsonSchema } from "../lib/json-schema/schema.js";
import { TokenConstraint } from "../lib/json-schema/token-constraint.js";
import { vocabularyFromGguf } from "../lib/json-schema/vocab.js";
import { schemaCorpus } from "../tests/support/schema-corpus.js";

const VOCAB = new URL("../../../shared/models/ggml-vocab/ggml-vocab-starcoder.gguf", import.meta.url).pathname;

const percentile = (values: number[], p: number): number => {
  const sorted = values.slice().sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
};

async function main(): Promise<void> {
  const info = await readGgufFileInfo(VOCAB, { readTensorInfo: false });
  const ggml = (info.metadata as unknown as { tokenizer: { ggml: { model?: string; tokens?: string[]; token_type?: number[]; eos_token_id?: number } } }).tokenizer.ggml;
  const vocab = vocabularyFromGguf(ggml, [ggml.eos_token_id ?? 0]);
  new TokenConstraint(compileJsonSchema({ type: "string" }), vocab); // the vocabulary trie, built once per vocabulary
  const { schemas } = schemaCorpus();
  schemas["enum of 4096 strings (the bound)"] = { enum: Array.from({ length: 4096 }, (_, i) => `value-${i}-${(i * 7919) % 10007}`) };
  const compileMs: number[] = [];
  const tokenMs: number[] = [];
  let seed = 1;
  const random = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (const [name, schema] of Object.entries(schemas)) {
    const start = performance.now();
    const constraint = new TokenConstraint(compileJsonSchema(schema), vocab);
    constraint.mask(constraint.initial, 1 << 20);
    const ms = performance.now() - start;
    if (!name.startsWith("enum of 4096")) compileMs.push(ms);
    else console.log(`compile, ${name}: ${ms.toFixed(1)} ms`);
    // Random walks: each step picks an allowed token uniformly.
    let steps = 0;
    let spent = 0;
    while (steps < 256) {
      const driver = new JsonGenerationDriver(constraint, constraint.minTokens + 64);
      for (;;) {
        const t0 = performance.now();
        const mask = driver.mask();
        if (!mask) break;
        const allowed: number[] = [];
        for (let id = 0; id < vocab.size; id++) if (mask[id >>> 5] & (1 << (id & 31))) allowed.push(id);
        const pick = allowed[Math.floor(random() * allowed.length)];
        if (vocab.eosIds.includes(pick) || driver.step >= driver.budget) break;
        driver.push(pick);
        spent += performance.now() - t0;
        steps++;
      }
    }
    tokenMs.push(spent / steps);
  }
  console.log(`vocabulary: ${vocab.size} tokens; corpus: ${compileMs.length} schemas`);
  console.log(`compile (schema + constraint + first mask), ms: p50 ${percentile(compileMs, 50).toFixed(1)}, p95 ${percentile(compileMs, 95).toFixed(1)}, max ${Math.max(...compileMs).toFixed(1)}`);
  console.log(`JS per constrained token (mask + advance), ms: p50 ${percentile(tokenMs, 50).toFixed(3)}, p95 ${percentile(tokenMs, 95).toFixed(3)}`);
}

/** Median decode ms/token constrained vs unconstrained on one loaded model. */
async function perToken(name: string, backend: InferenceBackend, repeats = 7): Promise<void> {
  const schema = { type: "object", properties: { story: { type: "string" }, moral: { type: "string" } }, required: ["story", "moral"] };
  const free: number[] = [];
  const constrained: number[] = [];
  const msPerToken = (tps: number): number => 1000 / tps;
  for (let i = 0; i < repeats; i++) {
    const runs = [
      async () => free.push(msPerToken((await backend.generate("Once upon a time", { maxTokens: 64, temperature: 1, seed: i, ignoreEos: true })).timings.generatedTokensPerSecond)),
      async () => constrained.push(msPerToken((await backend.generate("Once upon a time", { maxTokens: 64, temperature: 1, seed: i, jsonSchema: schema })).timings.generatedTokensPerSecond)),
    ];
    if (i % 2) runs.reverse();
    for (const run of runs) await run();
  }
  const p50 = (v: number[]) => percentile(v, 50);
  console.log(`${name}: ms/token unconstrained ${p50(free).toFixed(2)}, constrained ${p50(constrained).toFixed(2)}, ratio ${(p50(constrained) / p50(free)).toFixed(2)}`);
}

await main();
const models = new URL("../../../shared/models/stories260K/", import.meta.url).pathname;
const gguf = new GgufBackend();
await gguf.load(`${models}stories260K.gguf`, { threads: 1 });
await perToken("GGUF stories260K", gguf);
await gguf.unload();
if (mlxAvailability().available) {
  const mlx = new MlxBackend();
  await mlx.load(`${models}mlx-4bit`);
  await perToken("MLX stories260K 4-bit", mlx);
  await mlx.unload();
}
