/**
 * Many callers on one loaded model: overlapping requests are queued fairly and none disturbs
 * another's output or cache; unload ends running and queued requests with UnloadedError; aborting
 * one request frees its turn; the queue bound gives BusyError. Runs on every backend available.
 */
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import type { GenerateResult } from "../lib/backend.js";
import type { BaseBackend } from "../lib/backends/base.js";
import { GgufBackend } from "../lib/backends/gguf.js";
import { MlxBackend } from "../lib/backends/mlx.js";
import { BusyError, UnloadedError } from "../lib/errors.js";
import { mlxAvailable } from "./support/mlx.js";

const shared = (p: string) => fileURLToPath(new URL(`../../shared/models/${p}`, import.meta.url));

const PROMPTS = [
  "Once upon a time", "One day, Lily", "Tom and his dog", "The sun was", "There was a big tree",
  "Sue had a red ball", "A little bird", "The cat sat", "Mom said", "Ben liked to",
];

interface Target {
  name: string;
  enabled: boolean;
  make: (options?: { maxQueuedRequests?: number }) => BaseBackend;
  path: string;
  load: { threads?: number; maxBatch?: number };
  /** Requests the backend runs at once by default (GGUF's maxBatch). */
  parallel: number;
}

const TARGETS: Target[] = [
  { name: "mlx", enabled: mlxAvailable, make: (o) => new MlxBackend(o), path: shared("stories260K/hf-f32"), load: { maxBatch: 4 }, parallel: 4 },
  { name: "gguf", enabled: true, make: (o) => new GgufBackend(o), path: shared("stories260K/stories260K.gguf"), load: { threads: 1, maxBatch: 4 }, parallel: 4 },
];

for (const target of TARGETS) {
  describe.skipIf(!target.enabled)(`concurrent requests on ${target.name}`, () => {
    it("20 overlapping greedy requests return exactly what they return one at a time", async () => {
      const model = target.make();
      await model.load(target.path, target.load);
      try {
        const requests = Array.from({ length: 20 }, (_, i) => PROMPTS[i % PROMPTS.length] + (i >= 10 ? "," : ""));
        const alone: string[] = [];
        for (const p of requests) alone.push((await model.generate(p, { maxTokens: 24, temperature: 0 })).text);
        const together = await Promise.all(requests.map((p) => model.generate(p, { maxTokens: 24, temperature: 0 })));
        expect(together.map((r) => r.text)).toEqual(alone);
        expect(new Set(alone).size).toBeGreaterThan(10); // the prompts really differ
      } finally {
        await model.unload();
      }
    });

    it("seeded sampling requests interleaved with greedy ones are unaffected by each other", async () => {
      const model = target.make();
      await model.load(target.path, target.load);
      try {
        const sampled = { maxTokens: 20, temperature: 1, seed: 7 };
        const alone = (await model.generate(PROMPTS[0], sampled)).text;
        const mixed = await Promise.all([
          model.generate(PROMPTS[1], { maxTokens: 20 }),
          model.generate(PROMPTS[0], sampled),
          model.generate(PROMPTS[2], { maxTokens: 20 }),
        ]);
        expect(mixed[1].text).toBe(alone);
      } finally {
        await model.unload();
      }
    });

    it("unload() while one request runs and others wait: all end with UnloadedError, no crash", async () => {
      const model = target.make();
      await model.load(target.path, target.load);
      const running = model.generateStream(PROMPTS[0], { maxTokens: 2000, ignoreEos: true });
      const iterator = running[Symbol.asyncIterator]();
      await iterator.next(); // the first request is generating now
      // Settled wrappers: the rejections happen during unload(), before the assertions look.
      const outcome = (p: Promise<unknown>) => p.then(() => "resolved", (e: unknown) => e);
      const queued = [model.generate(PROMPTS[1]), model.generate(PROMPTS[2])].map(outcome);
      const rest = outcome((async () => {
        for (;;) if ((await iterator.next()).done) break;
      })());
      const result = outcome(running.result);
      await model.unload();
      expect(await rest).toBeInstanceOf(UnloadedError);
      expect(await result).toBeInstanceOf(UnloadedError);
      for (const q of queued) expect(await q).toBeInstanceOf(UnloadedError);
      expect(model.isLoaded).toBe(false);
      // The backend is reusable afterwards.
      await model.load(target.path, target.load);
      expect((await model.generate(PROMPTS[0], { maxTokens: 4 })).tokens).toHaveLength(4);
      await model.unload();
    });

    it("aborting a running request frees its turn at once for the next one", async () => {
      const model = target.make();
      await model.load(target.path, target.load);
      try {
        const controller = new AbortController();
        const long = model.generate(PROMPTS[0], { maxTokens: 100_000, ignoreEos: true, signal: controller.signal });
        const next = model.generate(PROMPTS[1], { maxTokens: 8, temperature: 0 });
        setTimeout(() => controller.abort(), 50);
        const [aborted, done] = (await Promise.all([long, next])) as [GenerateResult, GenerateResult];
        expect(aborted.finishReason).toBe("abort");
        expect(aborted.tokens.length).toBeLessThan(100_000);
        expect(done.tokens).toHaveLength(8);
        // Aborting a request that is still queued removes it without touching the running one.
        const c2 = new AbortController();
        const first = model.generate(PROMPTS[2], { maxTokens: 16, temperature: 0 });
        const waiting = model.generate(PROMPTS[3], { maxTokens: 16, signal: c2.signal });
        c2.abort();
        expect((await waiting).finishReason).toBe("abort");
        expect((await first).tokens.length).toBeGreaterThan(0);
      } finally {
        await model.unload();
      }
    });

    it("beyond maxQueuedRequests a clear BusyError, and the queued ones still complete", async () => {
      const model = target.make({ maxQueuedRequests: 2 });
      await model.load(target.path, target.load);
      try {
        // The running ones and two waiting.
        const accepted = Array.from({ length: target.parallel + 2 }, (_, i) => model.generate(PROMPTS[i], { maxTokens: 8 }));
        const refused = model.generate(PROMPTS[9], { maxTokens: 8 });
        await expect(refused).rejects.toBeInstanceOf(BusyError);
        await expect(refused).rejects.toThrow(/busy.*maxQueuedRequests/i);
        for (const r of await Promise.all(accepted)) expect(r.tokens).toHaveLength(8);
      } finally {
        await model.unload();
      }
    });
  });
}
