/**
 * The JSON Schema corpus (tests/support/schema-corpus.ts: OpenAI's documented shapes, Zod and
 * Pydantic output, nested and recursive schemas): every schema compiles, and 10 seeded samples
 * at temperature 1 from the tiny stories260K model (which writes stories, not JSON) parse and
 * validate with ajv (+ ajv-formats) on both backends. Samples run under a tight maxTokens, so
 * budget-aware closing is exercised too.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GgufBackend } from "../lib/backends/gguf.js";
import { MlxBackend } from "../lib/backends/mlx.js";
import type { BaseBackend } from "../lib/backends/base.js";
import { parseAndValidate } from "../lib/json-schema/validate.js";
import { compileJsonSchema } from "../lib/json-schema/schema.js";
import { schemaCorpus } from "./support/schema-corpus.js";
import { mlxAvailable, mlxSkipReason } from "./support/mlx.js";

const MODELS = new URL("../../shared/models/stories260K/", import.meta.url).pathname;
const SAMPLES = 10;
const corpus = schemaCorpus();
if (corpus.skipped) console.warn(`Pydantic schemas skipped: ${corpus.skipped}`);
const entries = Object.entries(corpus.schemas);

describe("JSON Schema corpus", () => {
  it(`has at least 40 real-world schemas (${entries.length}), each compiled`, () => {
    expect(entries.length).toBeGreaterThanOrEqual(corpus.skipped ? 33 : 40);
    const refused: string[] = [];
    for (const [name, schema] of entries) {
      try {
        compileJsonSchema(schema);
      } catch (error) {
        refused.push(`${name}: ${(error as Error).message}`);
      }
    }
    expect(refused).toEqual([]);
  });
});

async function sampleCorpus(backend: BaseBackend): Promise<void> {
  const failures: string[] = [];
  let samples = 0;
  const slowest: [number, string][] = [];
  for (const [name, schema] of entries) {
    const started = performance.now();
    const minTokens = compileJsonSchema(schema).minTokens;
    for (let seed = 0; seed < SAMPLES; seed++) {
      const maxTokens = minTokens + 2 + seed * 2; // tight on purpose: budget-aware closing is part of what is checked
      const r = await backend.generate("Once upon a time", { jsonSchema: schema, temperature: 1, seed, maxTokens });
      samples++;
      const check = parseAndValidate(r.text, schema);
      if (!check.ok) failures.push(`${name} (seed ${seed}): ${r.text} -> ${JSON.stringify(check.issues)}`);
    }
    slowest.push([performance.now() - started, name]);
  }
  slowest.sort((a, b) => b[0] - a[0]);
  console.log(`slowest: ${slowest.slice(0, 5).map(([ms, n]) => `${n} ${Math.round(ms)} ms`).join("; ")}`);
  console.log(`corpus on ${backend.constructor.name}: ${samples - failures.length}/${samples} samples parse and validate (${entries.length} schemas)`);
  expect(failures).toEqual([]);
}

describe("JSON Schema corpus on GGUF (stories260K, ajv)", () => {
  const gguf = new GgufBackend();
  beforeAll(() => gguf.load(`${MODELS}stories260K.gguf`, { threads: 1 }));
  afterAll(() => gguf.unload());
  it(`${SAMPLES} samples per schema at temperature 1 all parse and validate`, () => sampleCorpus(gguf), 600_000);
});

describe("JSON Schema corpus on MLX (stories260K 4-bit, ajv)", () => {
  if (!mlxAvailable) console.warn(`MLX corpus skipped: ${mlxSkipReason}`);
  const mlx = new MlxBackend();
  beforeAll(async () => {
    if (mlxAvailable) await mlx.load(`${MODELS}mlx-4bit`);
  });
  afterAll(() => mlx.unload());
  it.skipIf(!mlxAvailable)(`${SAMPLES} samples per schema at temperature 1 all parse and validate`, () => sampleCorpus(mlx), 600_000);
});
