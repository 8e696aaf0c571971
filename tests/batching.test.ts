/**
 * Serving many callers from one loaded model: the prompt cache keeps recent sequences' KV state,
 * so interleaved conversations each evaluate only their new tokens (both backends); the GGUF
 * backend generates up to `maxBatch` requests at once, each returning exactly its solo tokens.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import type { GenerateOptions, JsonSchema, LoadOptions } from "../lib/backend.js";
import type { BaseBackend } from "../lib/backends/base.js";
import { recordDecodeCalls } from "../bench/gguf-decode-rows.js";
import { GgufBackend } from "../lib/backends/gguf.js";
import { MlxBackend } from "../lib/backends/mlx.js";
import { InvalidOptionError, UnloadedError } from "../lib/errors.js";
import { writeTinyModel } from "./reference/tiny-models.js";
import { writeRandomAdapter } from "./support/lora.js";
import { batchedVersusAlone, expectConcurrentEqualsAlone, idsOfLength } from "./support/batching.js";
import { mlxAvailable } from "./support/mlx.js";

const shared = (p: string) => fileURLToPath(new URL(`../../shared/models/${p}`, import.meta.url));

const TARGETS = [
  { name: "mlx", enabled: mlxAvailable, make: () => new MlxBackend(), path: shared("stories260K/hf-f32"), load: {} },
  { name: "gguf", enabled: true, make: () => new GgufBackend(), path: shared("stories260K/stories260K.gguf"), load: { threads: 1 } },
];

const PROMPTS = ["Once upon a time", "Tom and his dog", "The sun was", "A little bird", "Sue had a red ball", "Mom said", "Ben liked to", "The cat sat"];

const USER_TURNS = [" Then", " She said", " The end", " One day", " He was", " So they", " Later", " But", " And", " At last"];

/** Six long requests with four generating (maxBatch 4), then unload(): every one ends with UnloadedError. */
async function expectUnloadEndsBatch(model: BaseBackend, path: string, load: LoadOptions, maxTokens: number): Promise<void> {
  await model.load(path, load);
  const outcome = (p: Promise<unknown>) => p.then(() => "resolved", (e: unknown) => e);
  const streams = PROMPTS.slice(0, 6).map((p) => model.generateStream(p, { maxTokens, ignoreEos: true }));
  const iterators = streams.map((s) => s[Symbol.asyncIterator]());
  await Promise.all(iterators.slice(0, 4).map((it) => it.next())); // four are generating
  const results = streams.map((s) => outcome(s.result));
  const drains = iterators.map((it) => outcome((async () => {
    for (;;) if ((await it.next()).done) break;
  })()));
  await model.unload();
  for (const r of [...results, ...drains]) expect(await r).toBeInstanceOf(UnloadedError);
}

for (const target of TARGETS) {
  describe.skipIf(!target.enabled)(`prompt cache on ${target.name}`, () => {
    it("two interleaved 10-turn conversations each evaluate only their new tokens from turn 2, with a fresh model's output", async () => {
      const cached = target.make();
      const fresh = target.make();
      await cached.load(target.path, target.load);
      await fresh.load(target.path, { ...target.load, promptCacheBytes: 0 });
      try {
        const bos = cached.tokenize("", { addSpecialTokens: true });
        // The two share their first sentence, as conversations share a system prompt.
        const opening = [...bos, ...cached.tokenize("Once upon a time, there was a little girl named Lily.")];
        const conversations = [" She had a cat.", " Tom and his dog"].map((start) => [...opening, ...cached.tokenize(start)]);
        const options: GenerateOptions = { maxTokens: 6, ignoreEos: true };
        const userTokens = [0, 0];
        for (let turn = 0; turn < 10; turn++) {
          for (const [c, history] of conversations.entries()) {
            const answer = await cached.generate(history, options);
            const reference = await fresh.generate(history, options);
            expect(answer.tokens, `conversation ${c} turn ${turn + 1}`).toEqual(reference.tokens);
            // promptCacheBytes: 0 keeps nothing: every prompt is evaluated whole.
            expect(reference.usage.evaluatedPromptTokens).toBe(history.length);
            const user = cached.tokenize(USER_TURNS[(turn + c) % USER_TURNS.length]);
            // Turn 1 of the second conversation starts from the first one's shared opening.
            if (turn === 0 && c === 1) expect(answer.usage.evaluatedPromptTokens).toBeLessThanOrEqual(history.length - opening.length + 1);
            if (turn > 0) {
              // Exactly the new tokens, although the other conversation ran in between: the user's tokens, plus on
              // GGUF the last answer token, sampled but never fed back (MLX's batch step fed it).
              const unfed = target.name === "gguf" ? 1 : 0;
              expect(answer.usage.evaluatedPromptTokens, `conversation ${c} turn ${turn + 1}`).toBe(userTokens[c] + unfed);
            }
            history.push(...answer.tokens, ...user);
            userTokens[c] = user.length;
          }
        }
      } finally {
        await Promise.all([cached.unload(), fresh.unload()]);
      }
    });

    it("promptCacheBytes must be a non-negative integer", async () => {
      const model = target.make();
      await expect(model.load(target.path, { ...target.load, promptCacheBytes: -1 })).rejects.toBeInstanceOf(InvalidOptionError);
      await expect(model.load(target.path, { ...target.load, promptCacheBytes: 1.5 })).rejects.toThrow(/promptCacheBytes/);
    });
  });
}

describe("concurrent requests batched on gguf", () => {
  const path = shared("stories260K/stories260K.gguf");
  /** Mixed lengths and limits, one seeded sampling request. */
  const optionsFor = (i: number): GenerateOptions =>
    i === 3 ? { maxTokens: 20, temperature: 1, seed: 11 } : { maxTokens: 8 + 4 * i, ignoreEos: i % 2 === 0 };

  for (const n of [1, 4, 8]) {
    it(`${n} concurrent requests return exactly their solo tokens, and run together`, async () => {
      const model = new GgufBackend();
      await model.load(path, { threads: 1, maxBatch: 8 });
      try {
        const prompts = Array.from({ length: n }, (_, i) => PROMPTS[i]);
        const alone = [];
        for (const [i, p] of prompts.entries()) alone.push((await model.generate(p, optionsFor(i))).tokens);
        // Every request's first token comes before any request ends: they are generated together.
        const firstTokens: number[] = [];
        const ends: number[] = [];
        const together = await Promise.all(prompts.map(async (p, i) => {
          const tokens: number[] = [];
          for await (const chunk of model.generateStream(p, optionsFor(i))) {
            if (tokens.length === 0) firstTokens.push(performance.now());
            tokens.push(...chunk.tokens);
          }
          ends.push(performance.now());
          return tokens;
        }));
        expect(together).toEqual(alone);
        expect(Math.max(...firstTokens)).toBeLessThan(Math.min(...ends));
      } finally {
        await model.unload();
      }
    });
  }

  for (const n of [2, 8]) {
    it(`${n} concurrent requests share every llama.cpp decode (one batch of ${n} rows per step)`, async () => {
      const model = new GgufBackend();
      await model.load(path, { threads: 1, maxBatch: 8, promptCacheBytes: 0 });
      try {
        const calls = recordDecodeCalls(model);
        await Promise.all(PROMPTS.slice(0, n).map((p) => model.generate(p, { maxTokens: 12, ignoreEos: true })));
        // The first decode evaluates every prompt; each of the 11 steps after it decodes one token of every request.
        expect(calls.map((c) => c.rows)).toEqual(Array.from({ length: 12 }, () => n));
      } finally {
        await model.unload();
      }
    });
  }

  it("aborting one request mid-stream frees its sequence without disturbing the others", async () => {
    const model = new GgufBackend();
    await model.load(path, { threads: 1, maxBatch: 4 });
    try {
      const alone = [];
      for (const p of PROMPTS.slice(1, 4)) alone.push((await model.generate(p, { maxTokens: 40, ignoreEos: true })).tokens);
      const controller = new AbortController();
      const doomed = (async () => {
        let seen = 0;
        const stream = model.generateStream(PROMPTS[0], { maxTokens: 100_000, ignoreEos: true, signal: controller.signal });
        for await (const chunk of stream) if ((seen += chunk.tokens.length) >= 5) controller.abort();
        return stream.result;
      })();
      const others = PROMPTS.slice(1, 4).map((p) => model.generate(p, { maxTokens: 40, ignoreEos: true }));
      const aborted = await doomed;
      expect(aborted.finishReason).toBe("abort");
      expect(aborted.tokens.length).toBeLessThan(100);
      // Its sequence is free at once: a fifth request runs beside the three (maxBatch 4).
      const fifth = await model.generate(PROMPTS[4], { maxTokens: 4 });
      expect(fifth.tokens).toHaveLength(4);
      expect((await Promise.all(others)).map((r) => r.tokens)).toEqual(alone);
    } finally {
      await model.unload();
    }
  });

  it("unload() during a batch ends every request, running or queued, with UnloadedError", () =>
    expectUnloadEndsBatch(new GgufBackend(), path, { threads: 1, maxBatch: 4 }, 5000));

  it("maxBatch must be an integer in [1, 64] on both backends", async () => {
    await expect(new GgufBackend().load(path, { maxBatch: 0 })).rejects.toThrow(/maxBatch.*\[1, 64\]/);
    if (mlxAvailable) {
      await expect(new MlxBackend().load(shared("stories260K/hf-f32"), { maxBatch: 65 })).rejects.toBeInstanceOf(InvalidOptionError);
      await expect(new MlxBackend().load(shared("stories260K/hf-f32"), { maxBatch: 1.5 })).rejects.toThrow(/maxBatch/);
    }
  });
});

describe.skipIf(!mlxAvailable)("continuous batching on mlx", () => {
  const path = shared("stories260K/hf-f32");
  const FLAG: JsonSchema = { type: "object", properties: { ok: { type: "boolean" }, n: { type: "integer" } }, required: ["ok", "n"] };
  const LONG = " Once upon a time there was a little girl named Lily.".repeat(60); // > one 512-token prefill chunk
  /** Mixed requests: lengths, limits, stop strings, jsonSchema, seeded sampling, penalties. */
  const requestFor = (i: number): { prompt: string; options: GenerateOptions } => {
    const prompt = i % 7 === 5 ? LONG + PROMPTS[i % PROMPTS.length] : PROMPTS[i % PROMPTS.length] + " and".repeat(i % 3);
    const kind = i % 6;
    const options: GenerateOptions =
      kind === 0 ? { maxTokens: 6 + 3 * (i % 5), ignoreEos: true }
      : kind === 1 ? { maxTokens: 24, temperature: 0.9, seed: 100 + i, topK: 20 }
      : kind === 2 ? { maxTokens: 30, stop: [" the", "."] }
      : kind === 3 ? { maxTokens: 40, jsonSchema: FLAG, temperature: 1, seed: i }
      : kind === 4 ? { maxTokens: 16, temperature: 0.7, seed: 7, topP: 0.9, repetitionPenalty: 1.3 }
      : { maxTokens: 12 };
    return { prompt, options };
  };

  it.each(["hf-f32", "mlx-4bit"])("batched decode logits equal single-row logits at float32 (%s; rows of different lengths, left-padded)", async (dir) => {
    const model = new MlxBackend();
    await model.load(shared(`stories260K/${dir}`), { maxBatch: 8 });
    try {
      const bos = model.tokenize("", { addSpecialTokens: true });
      const prompts = ["Once", "Tom and his dog went to the park", "The sun was", "A little bird sang a happy song all day long"]
        .map((p) => [...bos, ...model.tokenize(p)]);
      // Measured 0 (bit-identical) on the CPU; a wrong per-row RoPE offset gives differences of order 1.
      expect(await batchedVersusAlone(model, prompts)).toBeLessThanOrEqual(1e-5);
    } finally {
      await model.unload();
    }
  });

  for (const n of [1, 4, 8, 20]) {
    it(`${n} concurrent mixed requests (some aborted mid-stream) each return exactly their solo tokens`, async () => {
      const model = new MlxBackend();
      await model.load(path, { maxBatch: 8 });
      try {
        expect(model.info?.maxBatch).toBe(8);
        const requests = Array.from({ length: n }, (_, i) => requestFor(i));
        const alone = [];
        for (const r of requests) alone.push(await model.generate(r.prompt, r.options));
        // Every fourth request (from the second) is aborted after 3 tokens.
        const aborts = new Set(requests.map((_, i) => i).filter((i) => i % 4 === 1 && n > 1));
        const firstTokens: number[] = [];
        const ends: number[] = [];
        const together = await Promise.all(requests.map(async (r, i) => {
          const controller = new AbortController();
          const stream = model.generateStream(r.prompt, { ...r.options, signal: controller.signal });
          let seen = 0;
          for await (const chunk of stream) {
            if (seen === 0) firstTokens.push(performance.now());
            seen += chunk.tokens.length;
            if (aborts.has(i) && seen >= 3) controller.abort();
          }
          ends.push(performance.now());
          return stream.result;
        }));
        for (const [i, got] of together.entries()) {
          const want = alone[i];
          if (aborts.has(i)) {
            expect(got.finishReason, `request ${i}`).toBe("abort");
            // What it got before the abort is its solo prefix.
            expect(want.tokens.slice(0, got.tokens.length), `request ${i}`).toEqual(got.tokens);
            continue;
          }
          expect(got.tokens, `request ${i}`).toEqual(want.tokens);
          expect(got.text, `request ${i}`).toBe(want.text);
          expect(got.finishReason, `request ${i}`).toBe(want.finishReason);
          if (requests[i].options.jsonSchema) expect(() => JSON.parse(got.text)).not.toThrow();
        }
        // They were generated together: some request's first token came before another one ended.
        if (n > 1) expect(Math.max(...firstTokens.slice(0, Math.min(n, 8)))).toBeLessThan(Math.max(...ends));
      } finally {
        await model.unload();
      }
    });
  }

  it("an aborted request leaves its row at once: a waiting request runs beside the others, which are undisturbed", async () => {
    const model = new MlxBackend();
    await model.load(path, { maxBatch: 2 });
    try {
      const options: GenerateOptions = { maxTokens: 300, ignoreEos: true };
      const soloA = await model.generate(PROMPTS[1], options);
      const soloC = await model.generate(PROMPTS[2], { maxTokens: 5 });
      const controller = new AbortController();
      const a = model.generate(PROMPTS[1], options);
      let aDone = Infinity;
      void a.then(() => (aDone = performance.now()));
      const b = (async () => {
        const stream = model.generateStream(PROMPTS[0], { maxTokens: 100_000, ignoreEos: true, signal: controller.signal });
        let seen = 0;
        for await (const chunk of stream) if ((seen += chunk.tokens.length) >= 3) controller.abort();
        return stream.result;
      })();
      const c = model.generate(PROMPTS[2], { maxTokens: 5 }); // waits: both rows are taken
      expect((await b).finishReason).toBe("abort");
      const cResult = await c;
      const cDone = performance.now();
      expect(cResult.tokens).toEqual(soloC.tokens);
      expect(cDone).toBeLessThan(aDone); // C ran in B's row while A was still decoding
      expect((await a).tokens).toEqual(soloA.tokens);
    } finally {
      await model.unload();
    }
  });

  it("unload() during a batch ends every request, running or queued, with UnloadedError", () =>
    expectUnloadEndsBatch(new MlxBackend(), path, { maxBatch: 4 }, 1500));

  it("requests naming different adapters are not mixed in one batch, and each returns its solo tokens", async () => {
    const root = mkdtempSync(join(tmpdir(), "mlx-node-batch-"));
    const model = new MlxBackend();
    try {
      await model.load(path, { maxBatch: 8 });
      await model.loadAdapter("x", writeRandomAdapter(path, join(root, "x"), { rank: 4, seed: 3 }));
      const requests = PROMPTS.slice(0, 6).map((p, i) => ({ p, options: { maxTokens: 12, ignoreEos: true, ...(i % 2 ? { adapter: "x" } : {}) } }));
      const alone = [];
      for (const r of requests) alone.push((await model.generate(r.p, r.options)).tokens);
      expect(alone[1]).not.toEqual((await model.generate(requests[1].p, { maxTokens: 12, ignoreEos: true })).tokens); // the adapter matters
      const together = await Promise.all(requests.map((r) => model.generate(r.p, r.options)));
      expect(together.map((r) => r.tokens)).toEqual(alone);
    } finally {
      await model.unload();
      rmSync(root, { recursive: true, force: true });
    }
  });

  it("logprobs of batched rows equal each request's logprobs alone (within 1e-5)", async () => {
    const model = new MlxBackend();
    await model.load(path, { maxBatch: 8 });
    try {
      const requests: { prompt: string; options: GenerateOptions }[] = [
        { prompt: PROMPTS[0], options: { maxTokens: 12, ignoreEos: true, logprobs: true, topLogprobs: 3 } },
        { prompt: PROMPTS[4] + " and", options: { maxTokens: 10, ignoreEos: true, temperature: 0.8, seed: 3, topK: 12, repetitionPenalty: 1.2, logprobs: true, topLogprobs: 5 } },
      ];
      const alone = [];
      for (const r of requests) alone.push(await model.generate(r.prompt, r.options));
      const together = await Promise.all(requests.map((r) => model.generate(r.prompt, r.options)));
      let worst = 0;
      for (const [i, got] of together.entries()) {
        const want = alone[i];
        expect(got.tokens, `request ${i}`).toEqual(want.tokens);
        expect(got.logprobs?.length, `request ${i}`).toBe(want.tokens.length);
        for (const [k, entry] of got.logprobs!.entries()) {
          const solo = want.logprobs![k];
          expect(entry.id).toBe(solo.id);
          expect(entry.topLogprobs.map((t) => t.id)).toEqual(solo.topLogprobs.map((t) => t.id));
          worst = Math.max(worst, Math.abs(entry.logprob - solo.logprob),
            ...entry.topLogprobs.map((t, j) => Math.abs(t.logprob - solo.topLogprobs[j].logprob)));
        }
      }
      expect(worst).toBeLessThanOrEqual(1e-5);
    } finally {
      await model.unload();
    }
  });

  it("sliding-window layers batch past their window (gemma3_text, window 5): each request returns its solo tokens, also after old columns are dropped and a newcomer joins", async () => {
    const root = mkdtempSync(join(tmpdir(), "mlx-node-batch-"));
    const model = new MlxBackend();
    const fresh = new MlxBackend();
    try {
      const dir = join(root, "g3");
      writeTinyModel(dir, { family: "gemma3_text", dtype: "float32", seed: 5, slidingWindow: 5 });
      await model.load(dir, { maxBatch: 3 });
      await fresh.load(dir, { promptCacheBytes: 0 });
      expect(model.info?.maxBatch).toBe(3);
      // Rows of different lengths, all past the window; measured 0 (bit-identical). A window
      // read from the wrong columns gives differences of order 1.
      expect(await batchedVersusAlone(model, [idsOfLength(3, 1), idsOfLength(9, 2), idsOfLength(12, 3), idsOfLength(40, 4)])).toBeLessThanOrEqual(1e-5);
      // Two rows decode past 260 positions (window - 1 + one 256-column step: old columns are
      // dropped), one leaves early, and the fourth waits for a free row, then joins them.
      const requests = [
        { p: idsOfLength(9, 5), o: { maxTokens: 300, ignoreEos: true } },
        { p: idsOfLength(3, 6), o: { maxTokens: 12, ignoreEos: true } },
        { p: idsOfLength(30, 7), o: { maxTokens: 280, ignoreEos: true } },
        { p: idsOfLength(14, 8), o: { maxTokens: 40, temperature: 0.8, seed: 4, ignoreEos: true } },
      ];
      const alone = [];
      for (const r of requests) alone.push((await fresh.generate(r.p, r.o)).tokens);
      const together = await Promise.all(requests.map((r) => model.generate(r.p, r.o)));
      expect(together.map((r) => r.tokens)).toEqual(alone);
      // A conversation continues from its row's cache (the window's kept columns): the same tokens
      // as a fresh model's, with only the new tokens evaluated.
      const next = [...requests[0].p, ...alone[0], ...idsOfLength(6, 9)];
      const continued = await model.generate(next, { maxTokens: 20, ignoreEos: true });
      expect(continued.tokens).toEqual((await fresh.generate(next, { maxTokens: 20, ignoreEos: true })).tokens);
      expect(continued.usage.evaluatedPromptTokens).toBe(6);
    } finally {
      await model.unload();
      await fresh.unload();
      rmSync(root, { recursive: true, force: true });
    }
  });

  it("soft-capped attention batches (gemma2): rows return their solo tokens and logits", async () => {
    const root = mkdtempSync(join(tmpdir(), "mlx-node-batch-"));
    const model = new MlxBackend();
    try {
      writeTinyModel(join(root, "g2"), { family: "gemma2", dtype: "float32", seed: 5 });
      await model.load(join(root, "g2"), { maxBatch: 8 });
      expect(model.info?.maxBatch).toBe(8);
      // Measured 0; with the padding left visible to the capped scores, of order 1.
      expect(await batchedVersusAlone(model, [idsOfLength(2, 1), idsOfLength(9, 2), idsOfLength(5, 3)])).toBeLessThanOrEqual(1e-5);
      await expectConcurrentEqualsAlone(model, [[1, 5, 9], [2, 7, 7, 7, 3], [4]].map((prompt) => ({ prompt, options: { maxTokens: 8, ignoreEos: true } })));
    } finally {
      await model.unload();
      rmSync(root, { recursive: true, force: true });
    }
  });
});
