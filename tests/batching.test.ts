/**
 * Serving many callers from one loaded model: the prompt cache keeps recent sequences' KV state,
 * so interleaved conversations each evaluate only their new tokens (both backends); the GGUF
 * backend generates up to `maxBatch` requests at once, each returning exactly its solo tokens.
 */
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import type { GenerateOptions } from "../lib/backend.js";
import type { BaseBackend } from "../lib/backends/base.js";
import { GgufBackend } from "../lib/backends/gguf.js";
import { MlxBackend } from "../lib/backends/mlx.js";
import { InvalidOptionError, UnloadedError } from "../lib/errors.js";
import { mlxAvailable } from "./support/mlx.js";

const shared = (p: string) => fileURLToPath(new URL(`../../shared/models/${p}`, import.meta.url));

const TARGETS = [
  { name: "mlx", enabled: mlxAvailable, make: () => new MlxBackend(), path: shared("stories260K/hf-f32"), load: {} },
  { name: "gguf", enabled: true, make: () => new GgufBackend(), path: shared("stories260K/stories260K.gguf"), load: { threads: 1 } },
];

const USER_TURNS = [" Then", " She said", " The end", " One day", " He was", " So they", " Later", " But", " And", " At last"];

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
              // New: the user's tokens, plus the last answer token, which was sampled but never fed back.
              expect(answer.usage.evaluatedPromptTokens, `conversation ${c} turn ${turn + 1}`).toBeLessThanOrEqual(userTokens[c] + 1);
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
  const PROMPTS = ["Once upon a time", "Tom and his dog", "The sun was", "A little bird", "Sue had a red ball", "Mom said", "Ben liked to", "The cat sat"];
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

  it("unload() during a batch ends every request, running or queued, with UnloadedError", async () => {
    const model = new GgufBackend();
    await model.load(path, { threads: 1, maxBatch: 4 });
    const outcome = (p: Promise<unknown>) => p.then(() => "resolved", (e: unknown) => e);
    const streams = PROMPTS.slice(0, 6).map((p) => model.generateStream(p, { maxTokens: 5000, ignoreEos: true }));
    const iterators = streams.map((s) => s[Symbol.asyncIterator]());
    await Promise.all(iterators.slice(0, 4).map((it) => it.next())); // four are generating
    const results = streams.map((s) => outcome(s.result));
    const drains = iterators.map((it) => outcome((async () => {
      for (;;) if ((await it.next()).done) break;
    })()));
    await model.unload();
    for (const r of [...results, ...drains]) expect(await r).toBeInstanceOf(UnloadedError);
  });

  it("maxBatch must be an integer in [1, 64]; the MLX engine accepts only 1", async () => {
    await expect(new GgufBackend().load(path, { maxBatch: 0 })).rejects.toThrow(/maxBatch.*\[1, 64\]/);
    if (mlxAvailable) {
      await expect(new MlxBackend().load(shared("stories260K/hf-f32"), { maxBatch: 2 })).rejects.toBeInstanceOf(InvalidOptionError);
    }
  });
});
