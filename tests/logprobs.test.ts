/**
 * `logprobs` / `topLogprobs`, judged by references that are not the engine being tested:
 * - MLX against mlx-lm: greedy runs against the log-softmax of mlx-lm's logits from the conformance
 *   harness (tests/python/conformance.py: stories260K f32 and a tiny 4-bit llama), and a sampled run
 *   (temperature, topK, repetition penalty) against the distribution mlx-lm's own logits processor,
 *   top-k filter and temperature scaling give for the same tokens (tests/python/mlx_lm_logprobs.py).
 * - GGUF (llama.cpp): under greedy the chosen token is the most likely one, alternatives are sorted
 *   and their probabilities sum to at most 1; stream chunks carry what the result carries.
 * - GGUF against MLX on stories260K (the same float32 weights in both formats).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GgufBackend } from "../lib/backends/gguf.js";
import { MlxBackend } from "../lib/backends/mlx.js";
import { InvalidOptionError } from "../lib/errors.js";
import type { GeneratedTokenLogprob } from "../lib/logprobs.js";
import { TOKENIZER_SOURCE } from "./reference/tiny-models.js";
import { conformanceAvailability, conformanceReferences, type ConformanceReference } from "./support/conformance.js";
import { mlxAvailable, mlxSkipReason } from "./support/mlx.js";
import { runPython } from "./support/python.js";
import { realModels } from "./support/real-models.js";

const STORIES = join(import.meta.dirname, "..", "..", "shared", "models", "stories260K");
const STORIES_GGUF = join(STORIES, "stories260K.gguf");
const STORIES_F32 = join(STORIES, "hf-f32");
const PROMPT = "Once upon a time";

/**
 * Max |logprob diff| against mlx-lm: the engine's float32 logits are within 1e-4 of mlx-lm's
 * (tests/mlx-conformance.test.ts), and a log-softmax subtracts one logsumexp, itself within 1e-4.
 */
const MLX_LM_BOUND = 2e-4;

/** log-softmax in float64 of one row of logits. */
function logSoftmax(row: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of row) max = Math.max(max, v);
  let sum = 0;
  for (const v of row) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(row, (v) => v - lse);
}

/**
 * Max |diff| between the engine's report and the reference log-probabilities (one row per token):
 * the token's own logprob, and the top alternatives, which must be the reference's n largest (by
 * value, so that ties may come in either order), each reported at its reference value.
 */
function diffFromReference(got: GeneratedTokenLogprob[], tokens: number[], rows: ArrayLike<number>[], n: number): number {
  expect(got.length).toBe(tokens.length);
  let max = 0;
  got.forEach((entry, i) => {
    const row = rows[i];
    expect(entry.id).toBe(tokens[i]);
    max = Math.max(max, Math.abs(entry.logprob - row[tokens[i]]));
    const want = Array.from(row).filter((v) => v > -Infinity).sort((a, b) => b - a).slice(0, n);
    expect(entry.topLogprobs.length, `position ${i}: alternatives`).toBe(want.length);
    entry.topLogprobs.forEach((alt, k) => {
      max = Math.max(max, Math.abs(alt.logprob - want[k]), Math.abs(alt.logprob - row[alt.id]));
    });
  });
  return max;
}

interface SampledOptions {
  temperature: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
  repetitionContextSize?: number;
  seed: number;
}

/** mlx-lm's distributions (tests/python/mlx_lm_logprobs.py) for `tokens` generated from `prompt` with `options`. */
function mlxLmLogprobs(prompt: number[], tokens: number[], o: SampledOptions): Float32Array[] {
  const dir = mkdtempSync(join(tmpdir(), "mlx-node-logprobs-"));
  try {
    writeFileSync(join(dir, "request.json"), JSON.stringify({
      prompt, tokens, temperature: o.temperature, top_k: o.topK ?? 0, top_p: o.topP ?? 1, min_p: o.minP ?? 0,
      ...(o.repetitionPenalty ? { repetition_penalty: o.repetitionPenalty, repetition_context_size: o.repetitionContextSize } : {}),
    }));
    runPython("mlx_lm_logprobs.py", [STORIES_F32, join(dir, "request.json"), join(dir, "out.f32")]);
    const bytes = readFileSync(join(dir, "out.f32"));
    const all = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    const vocab = all.length / tokens.length;
    return tokens.map((_, i) => all.slice(i * vocab, (i + 1) * vocab));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const python = conformanceAvailability();
const mlxLmSkip = !mlxAvailable ? mlxSkipReason : !python.available ? python.reason : "";
if (mlxLmSkip) console.warn(`[mlx-node] logprobs (mlx-lm) skipped: ${mlxLmSkip}`);

describe.skipIf(mlxLmSkip !== "")("logprobs (mlx-lm)", () => {
  let references: ConformanceReference[] = [];
  beforeAll(async () => {
    const { device } = await MlxBackend.runtimeInfo();
    const specs = [
      { family: "llama", checkpoint: STORIES_F32 },
      { family: "llama", seed: 9, quantization: { bits: 4, group_size: 64 } },
    ];
    references = conformanceReferences(specs, TOKENIZER_SOURCE, python.mlxLm, device).references;
  }, 600_000);

  it("greedy: each token's logprob and its top 5 are the log-softmax of mlx-lm's logits (stories260K f32, tiny llama 4-bit)", async () => {
    for (const ref of references) {
      const mlx = new MlxBackend();
      await mlx.load(ref.modelDir);
      try {
        const r = await mlx.generate(ref.prompt, { maxTokens: ref.greedy.length, ignoreEos: true, logprobs: true, topLogprobs: 5 });
        expect(r.tokens).toEqual(ref.greedy);
        // Row P-1+i of the reference is mlx-lm's logits before greedy token i.
        const rows = ref.greedy.map((_, i) => logSoftmax(ref.logits[ref.prompt.length - 1 + i]));
        const diff = diffFromReference(r.logprobs ?? [], r.tokens, rows, 5);
        console.log(`[logprobs (mlx-lm)] ${ref.modelDir.split("/").slice(-2).join("/")}: greedy ${r.tokens.length} tokens, max |logprob diff| ${diff.toExponential(2)} (bound ${MLX_LM_BOUND})`);
        expect(diff).toBeLessThanOrEqual(MLX_LM_BOUND);
      } finally {
        await mlx.unload();
      }
    }
  });

  // Each filter alone, so that the order of the chain (the engine: topK, topP, minP; mlx-lm's
  // make_sampler: top_p, min_p, top_k) does not matter.
  const sampled = [
    { name: "temperature 0.7, topK 8, repetitionPenalty 1.3", options: { temperature: 0.7, topK: 8, repetitionPenalty: 1.3, repetitionContextSize: 16, seed: 3 }, candidates: 8 },
    { name: "temperature 1.2, topP 0.9, minP 0.02", options: { temperature: 1.2, topP: 0.9, minP: 0.02, seed: 5 }, candidates: undefined },
  ];
  for (const c of sampled) {
    it(`sampled (${c.name}): the penalized, filtered, tempered distribution as mlx-lm's processor, filters and temperature give it`, async () => {
      const o: SampledOptions = c.options;
      const mlx = new MlxBackend();
      await mlx.load(STORIES_F32);
      try {
        const prompt = mlx.tokenize(PROMPT, { addSpecialTokens: true });
        const r = await mlx.generate(prompt, { ...o, maxTokens: 24, ignoreEos: true, logprobs: true, topLogprobs: 10 });
        const rows = mlxLmLogprobs(prompt, r.tokens, o);
        const diff = diffFromReference(r.logprobs ?? [], r.tokens, rows, 10);
        // topK 8 leaves 8 candidates: asked for 10, each position reports the 8 the draw could pick.
        if (c.candidates) expect((r.logprobs ?? []).every((e) => e.topLogprobs.length === c.candidates)).toBe(true);
        const kept = (r.logprobs ?? []).map((e) => e.topLogprobs.length);
        console.log(`[logprobs (mlx-lm)] stories260K sampled (${c.name}) ${r.tokens.length} tokens: max |logprob diff| ${diff.toExponential(2)} (bound ${MLX_LM_BOUND}), alternatives kept ${Math.min(...kept)}-${Math.max(...kept)}`);
        expect(diff).toBeLessThanOrEqual(MLX_LM_BOUND);
      } finally {
        await mlx.unload();
      }
    });
  }
});

/** What every report must satisfy: the chosen token's entry, alternatives sorted, probabilities summing to at most 1. */
function checkShape(entries: GeneratedTokenLogprob[], tokens: number[], n: number): void {
  expect(entries.map((e) => e.id)).toEqual(tokens);
  for (const e of entries) {
    expect(e.logprob).toBeLessThanOrEqual(0);
    expect(e.logprob).toBeGreaterThan(-Infinity);
    expect(e.topLogprobs.length).toBeLessThanOrEqual(n);
    const values = e.topLogprobs.map((t) => t.logprob);
    expect(values).toEqual([...values].sort((a, b) => b - a));
    expect(values.reduce((s, v) => s + Math.exp(v), 0)).toBeLessThanOrEqual(1 + 1e-5);
    expect(Buffer.from(e.bytes).toString("utf8")).toBe(e.token);
  }
}

// GGUF loads take one thread: no decode-thread measurement, and steady on a busy machine.
const backends = [
  { name: "gguf", make: () => new GgufBackend(), path: STORIES_GGUF, skip: "" },
  { name: "mlx", make: () => new MlxBackend(), path: STORIES_F32, skip: mlxAvailable ? "" : mlxSkipReason },
] as const;

for (const b of backends) {
  describe.skipIf(b.skip !== "")(`logprobs on ${b.name} (stories260K)`, () => {
    const backend = b.make();
    beforeAll(() => backend.load(b.path, { contextSize: 256, threads: 1 }), 60_000);
    afterAll(() => backend.unload());

    it("greedy: the chosen token is the most likely, alternatives are sorted and sum to at most 1; texts join to the output", async () => {
      const r = await backend.generate(PROMPT, { maxTokens: 24, logprobs: true, topLogprobs: 5 });
      const entries = r.logprobs ?? [];
      checkShape(entries, r.tokens, 5);
      for (const e of entries) {
        expect(e.topLogprobs).toHaveLength(5);
        expect(e.topLogprobs[0].id).toBe(e.id);
        expect(e.topLogprobs[0].logprob).toBe(e.logprob);
      }
      expect(entries.map((e) => e.token).join("")).toBe(r.text);
    });

    it("stream chunks carry one entry per token, the same as the result's; none without the option", async () => {
      const stream = backend.generateStream(PROMPT, { maxTokens: 16, temperature: 0.9, seed: 7, logprobs: true, topLogprobs: 2 });
      const streamed: GeneratedTokenLogprob[] = [];
      for await (const chunk of stream) {
        expect(chunk.logprobs?.length).toBe(chunk.tokens.length);
        streamed.push(...(chunk.logprobs ?? []));
      }
      const r = await stream.result;
      expect(streamed).toEqual(r.logprobs);
      checkShape(streamed, r.tokens, 2);
      const plain = await backend.generate(PROMPT, { maxTokens: 4 });
      expect("logprobs" in plain).toBe(false);
    });

    it("sampled with topK 8: at most 8 alternatives (the draw could pick no other), each finite", async () => {
      const r = await backend.generate(PROMPT, { maxTokens: 16, temperature: 0.8, topK: 8, seed: 11, logprobs: true, topLogprobs: 20 });
      checkShape(r.logprobs ?? [], r.tokens, 8);
      for (const e of r.logprobs ?? []) expect(e.topLogprobs.map((t) => t.id)).toContain(e.id);
    });

    it("jsonSchema: tokens the constraint forced have logprob 0; masked alternatives are left out", async () => {
      const schema = { type: "object", properties: { name: { type: "string", maxLength: 3 } }, required: ["name"] };
      const r = await backend.generate(PROMPT, { maxTokens: 14, jsonSchema: schema, logprobs: true, topLogprobs: 3 });
      JSON.parse(r.text);
      const entries = r.logprobs ?? [];
      checkShape(entries, r.tokens, 3);
      // 14 tokens leave no slack: the closing `"}` is forced, appended without sampling (probability 1).
      expect(r.finishReason).toBe("length");
      const last = entries[entries.length - 1];
      expect(last.token).toBe("}");
      expect(last.topLogprobs).toEqual([{ id: last.id, token: last.token, bytes: last.bytes, logprob: 0 }]);
      // Where the mask allows a single token, the alternatives hold only it (masked ones are left out).
      for (const e of entries) if (e.topLogprobs.length === 1) expect(e.logprob).toBeCloseTo(0, 5);
    });

    it("bad values are InvalidOptionErrors naming the option", () => {
      expect(() => backend.generateStream(PROMPT, { logprobs: true, topLogprobs: 21 })).toThrow(InvalidOptionError);
      expect(() => backend.generateStream(PROMPT, { logprobs: true, topLogprobs: 21 })).toThrow(/topLogprobs/);
      expect(() => backend.generateStream(PROMPT, { topLogprobs: 2 })).toThrow(/topLogprobs/);
      expect(() => backend.generateStream(PROMPT, { logprobs: 1 as unknown as boolean })).toThrow(/logprobs/);
    });
  });
}

describe.skipIf(!python.available)("logprobs on GGUF (llama.cpp) against mlx-lm, stories260K (the same float32 weights)", () => {
  // llama.cpp's logits differ from MLX's by up to ~1e-2 on this model (see below); divided by the
  // temperature 0.7 that is ~1.5e-2, so the bound is 3e-2.
  it("sampled (temperature 0.7, topK 8, repetitionPenalty 1.3): node-llama-cpp's report is the penalized, filtered, tempered distribution", async () => {
    const o = { temperature: 0.7, topK: 8, repetitionPenalty: 1.3, repetitionContextSize: 16, seed: 3 };
    const gguf = new GgufBackend();
    await gguf.load(STORIES_GGUF, { contextSize: 256, threads: 1 });
    try {
      const prompt = gguf.tokenize(PROMPT, { addSpecialTokens: true });
      const r = await gguf.generate(prompt, { ...o, maxTokens: 24, ignoreEos: true, logprobs: true, topLogprobs: 10 });
      const diff = diffFromReference(r.logprobs ?? [], r.tokens, mlxLmLogprobs(prompt, r.tokens, o), 10);
      console.log(`[logprobs gguf vs mlx-lm] stories260K sampled ${r.tokens.length} tokens: max |logprob diff| ${diff.toExponential(2)} (bound 3e-2)`);
      expect(diff).toBeLessThanOrEqual(3e-2);
    } finally {
      await gguf.unload();
    }
  });
});

describe.skipIf(!mlxAvailable)("logprobs: GGUF (llama.cpp) and MLX agree on stories260K (the same float32 weights)", () => {
  // llama.cpp's CPU kernels order float32 sums differently from MLX's (measured on this model: logits
  // and log-probabilities differ by up to ~1e-2 at low-ranked tokens from the first position on).
  const BOUND = 2e-2;
  it("greedy 32 tokens: the same tokens, logprobs and top 5 within 2e-2", async () => {
    const gguf = new GgufBackend();
    const mlx = new MlxBackend();
    await gguf.load(STORIES_GGUF, { contextSize: 256, threads: 1 });
    await mlx.load(STORIES_F32, { contextSize: 256 });
    try {
      const options = { maxTokens: 32, ignoreEos: true, logprobs: true, topLogprobs: 5 };
      const [g, m] = [await gguf.generate(PROMPT, options), await mlx.generate(PROMPT, options)];
      expect(g.tokens).toEqual(m.tokens);
      let max = 0;
      (g.logprobs ?? []).forEach((e, i) => {
        const other = (m.logprobs ?? [])[i];
        max = Math.max(max, Math.abs(e.logprob - other.logprob));
        e.topLogprobs.forEach((t, k) => (max = Math.max(max, Math.abs(t.logprob - other.topLogprobs[k].logprob))));
      });
      console.log(`[logprobs gguf vs mlx] stories260K greedy ${g.tokens.length} tokens: max |logprob diff| ${max.toExponential(2)} (bound ${BOUND})`);
      expect(g.logprobs).toHaveLength(32);
      expect(max).toBeLessThanOrEqual(BOUND);
    } finally {
      await gguf.unload();
      await mlx.unload();
    }
  });
});

const real = realModels();
const smol = real.models.find((m) => m.name === "smollm2-135m-instruct");
describe.skipIf(!smol)("logprobs on a byte-level BPE vocabulary (real SmolLM2-135M-Instruct, 49k tokens)", () => {
  // stories260K is SentencePiece; here token texts come from GPT-2-style byte characters ("Ġ" is a
  // space, "Ã§" is "ç"). Each reported token, generated or alternative, must read as the tokenizer
  // itself decodes it (detokenize([id])), except tokens holding part of a character (U+FFFD).
  const cases = [
    { name: "gguf (Q4_1)", make: () => new GgufBackend(), path: () => smol?.gguf ?? "", skip: false },
    { name: "mlx (4-bit)", make: () => new MlxBackend(), path: () => smol?.mlx4bit ?? "", skip: !mlxAvailable },
  ];
  for (const c of cases) {
    it.skipIf(c.skip)(`${c.name}: every token's text is what the tokenizer decodes, the generated bytes join to the answer`, async () => {
      const backend = c.make();
      await backend.load(c.path(), { contextSize: 256, threads: 1 });
      try {
        const r = await backend.chat([{ role: "user", content: "Say hello in French, with an emoji." }], { maxTokens: 8, logprobs: true, topLogprobs: 20 });
        const entries = r.logprobs ?? [];
        checkShape(entries, r.tokens, 20);
        expect(Buffer.concat(entries.map((e) => Buffer.from(e.bytes))).toString("utf8")).toBe(r.text);
        const all = entries.flatMap((e) => [e, ...e.topLogprobs]);
        for (const t of all) if (!t.token.includes("\ufffd")) expect(t.token, `token ${t.id}`).toBe(backend.detokenize([t.id]));
        expect(all.some((t) => t.token.startsWith(" "))).toBe(true);
        expect(all.some((t) => /[^\x00-\x7f]/.test(t.token) && !t.token.includes("\ufffd"))).toBe(true);
      } finally {
        await backend.unload();
      }
    }, 60_000);
  }
});
