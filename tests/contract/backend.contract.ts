/**
 * The InferenceBackend contract as one reusable vitest suite. Every backend runs it against a
 * small real model whose greedy output is known:
 *
 * ```ts
 * backendContractSuite("gguf", () => new GgufBackend(), { path, loadOptions: { threads: 1 }, greedy, corruptCopies });
 * ```
 *
 * The suite only uses the public InferenceBackend API and the typed errors, so it holds every
 * backend to the same behaviour: lifecycle, determinism, sampling, stop strings, limits, abort,
 * streaming, tokenizer round trips, validation, errors, usage/timings, a free event loop and
 * KV-cache reuse.
 */
import { getEventListeners } from "node:events";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { mkdtemp, rm } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import { basename, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { GenerateOptions, GenerateResult, InferenceBackend, LoadOptions } from "../../lib/backend.js";
import {
  AlreadyLoadedError, InvalidOptionError, MlxNodeError, ModelFormatError, ModelNotFoundError, NotLoadedError, UnloadedError,
} from "../../lib/errors.js";
import { describeRange, SAMPLING_PARAMETER_NAMES, SAMPLING_PARAMETERS, type SamplingParameterName } from "../../lib/sampling.js";

/** The model a backend is tested with, and what is known about it. */
export interface ContractModel {
  /** What `load()` takes for this backend: a file or a directory. */
  path: string;
  /** Options for every load in the suite (pass `{ threads: 1 }` on small machines). */
  loadOptions?: LoadOptions;
  /** Requests the backend runs at once with these options (more wait in the queue). Defaults to 1. */
  parallel?: number;
  /** The reference greedy (temperature 0) continuation of a prompt. */
  greedy: {
    prompt: string;
    /** `tokenize(prompt, { addSpecialTokens: true })`, when known. */
    promptIds?: readonly number[];
    /** The expected generated token ids (no end-of-generation token among them; 30 or more). */
    ids: readonly number[];
    /** The expected generated text. */
    text: string;
  };
  /**
   * Writes broken copies of the model into `dir` (truncated, not a model at all, ...) and returns
   * the paths `load()` must reject with a `ModelFormatError` whose message names the file.
   */
  corruptCopies(dir: string): Promise<Array<{ label: string; path: string }>>;
  /**
   * Writes copies of the model that lack a file it needs (an MLX directory without weights) or are
   * the wrong kind of path, and returns the paths `load()` must reject with a `ModelNotFoundError`.
   */
  incompleteCopies(dir: string): Promise<Array<{ label: string; path: string }>>;
  /** Strings that must survive `detokenize(tokenize(s))` unchanged. Defaults to a small set with punctuation, newlines and an emoji. */
  roundTripTexts?: readonly string[];
}

const DEFAULT_ROUND_TRIP = [
  "Once upon a time",
  "Hello, world! 123",
  "Lily's cat played.\nThe end.",
  "tab\there and  two spaces",
  "A smile 😀 and ü é ñ",
];

/**
 * Registers the contract tests for one backend.
 * @param name shown in the test names.
 * @param makeBackend returns a new, unloaded backend each call.
 * @param model the model to load and what is expected of it.
 */
export function backendContractSuite(name: string, makeBackend: () => InferenceBackend, model: ContractModel): void {
  const load = async (backend: InferenceBackend, extra: LoadOptions = {}) => {
    await backend.load(model.path, { ...model.loadOptions, ...extra });
    return backend;
  };
  const { prompt } = model.greedy;
  const expectedIds = [...model.greedy.ids];

  describe(`${name} backend contract`, () => {
    let tmp: string;
    beforeAll(async () => {
      tmp = await mkdtemp(join(tmpdir(), `mlx-node-contract-${name}-`));
    });
    afterAll(async () => {
      await rm(tmp, { recursive: true, force: true });
    });

    describe("lifecycle", () => {
      it("loads and unloads three times, reporting isLoaded, contextSize and threadCount", async () => {
        const backend = makeBackend();
        expect(backend.isLoaded).toBe(false);
        expect(backend.contextSize).toBe(0);
        expect(backend.threadCount).toBe(0);
        for (let cycle = 0; cycle < 3; cycle++) {
          await load(backend);
          expect(backend.isLoaded).toBe(true);
          expect(backend.contextSize).toBeGreaterThan(expectedIds.length);
          expect(backend.threadCount).toBeGreaterThanOrEqual(1);
          expect(backend.threadCount).toBeLessThanOrEqual(availableParallelism());
          if (model.loadOptions?.threads !== undefined) expect(backend.threadCount).toBe(model.loadOptions.threads);
          const result = await backend.generate(prompt, { maxTokens: 3 });
          expect(result.tokens).toEqual(expectedIds.slice(0, 3));
          await backend.unload();
          expect(backend.isLoaded).toBe(false);
          expect(backend.contextSize).toBe(0);
          expect(backend.threadCount).toBe(0);
        }
      });

      it("honours an explicit contextSize", async () => {
        const backend = await load(makeBackend(), { contextSize: 256 });
        try {
          expect(backend.contextSize).toBeGreaterThanOrEqual(256);
        } finally {
          await backend.unload();
        }
      });

      it("unload is idempotent (also before any load)", async () => {
        const backend = makeBackend();
        await backend.unload();
        await load(backend);
        await Promise.all([backend.unload(), backend.unload()]);
        await backend.unload();
        expect(backend.isLoaded).toBe(false);
      });

      it("rejects a second load while a model is loaded", async () => {
        const backend = await load(makeBackend());
        try {
          await expect(backend.load(model.path, model.loadOptions)).rejects.toBeInstanceOf(AlreadyLoadedError);
          expect(backend.isLoaded).toBe(true);
        } finally {
          await backend.unload();
        }
      });

      it("throws NotLoadedError for calls before load and after unload", async () => {
        const backend = makeBackend();
        const check = async () => {
          await expect(backend.generate(prompt)).rejects.toBeInstanceOf(NotLoadedError);
          expect(() => backend.generateStream(prompt)).toThrow(NotLoadedError);
          expect(() => backend.tokenize(prompt)).toThrow(NotLoadedError);
          expect(() => backend.detokenize([1, 2])).toThrow(NotLoadedError);
        };
        await check();
        await load(backend);
        await backend.unload();
        await check();
      });

      it("ends running and queued requests with UnloadedError when unloaded", async () => {
        const backend = await load(makeBackend());
        const running = backend.generateStream(prompt, { maxTokens: 1000 });
        let queued: Promise<unknown> | undefined;
        let unloading: Promise<void> | undefined;
        const consume = (async () => {
          let chunks = 0;
          for await (const _ of running) {
            chunks++;
            // A stream starts when iterated: queue the second request behind the running one.
            if (chunks === 1) queued = backend.generate(prompt, { maxTokens: 5 }).then(() => "resolved", (error: unknown) => error);
            if (chunks === 2) unloading = backend.unload();
          }
        })();
        await expect(consume).rejects.toBeInstanceOf(UnloadedError);
        await expect(running.result).rejects.toBeInstanceOf(UnloadedError);
        expect(await queued).toBeInstanceOf(UnloadedError);
        await unloading;
        expect(backend.isLoaded).toBe(false);
        // And the backend can be loaded again afterwards.
        await load(backend);
        expect((await backend.generate(prompt, { maxTokens: 2 })).tokens).toEqual(expectedIds.slice(0, 2));
        await backend.unload();
      });

      it("unload() during load() waits for the load and then unloads; load() right after unload() works", async () => {
        const backend = makeBackend();
        const loading = backend.load(model.path, model.loadOptions);
        const unloading = backend.unload();
        expect(backend.isLoaded).toBe(false);
        await unloading;
        await loading; // the load itself completed
        expect(backend.isLoaded).toBe(false);
        expect(backend.contextSize).toBe(0);
        expect(() => backend.generateStream(prompt)).toThrow(NotLoadedError);
        // A load started while the unload runs waits for it, then loads.
        await load(backend);
        const unloadingAgain = backend.unload();
        await backend.load(model.path, model.loadOptions);
        await unloadingAgain;
        expect(backend.isLoaded).toBe(true);
        expect((await backend.generate(prompt, { maxTokens: 2 })).tokens).toEqual(expectedIds.slice(0, 2));
        await backend.unload();
        // A load that fails while an unload waits for it: the unload settles, nothing is loaded.
        const failing = backend.load(join(tmp, "no-such-dir", basename(model.path)), model.loadOptions);
        await backend.unload();
        await expect(failing).rejects.toBeInstanceOf(ModelNotFoundError);
        expect(backend.isLoaded).toBe(false);
      });

      it("unload() does not wait for a reader that stopped reading; the next load is not blocked by it", async () => {
        const backend = await load(makeBackend());
        const stream = backend.generateStream(prompt, { maxTokens: 1000, ignoreEos: true });
        const paused = stream[Symbol.asyncIterator]();
        await paused.next(); // then never read again, never returned
        const created = backend.generateStream(prompt, { maxTokens: 5 }); // made under this load, first read after it
        await backend.unload();
        expect(backend.isLoaded).toBe(false);
        await load(backend);
        expect((await backend.generate(prompt, { maxTokens: 2 })).tokens).toEqual(expectedIds.slice(0, 2));
        await expect(created.result).rejects.toBeInstanceOf(UnloadedError);
        await expect(stream.result).rejects.toBeInstanceOf(UnloadedError);
        await backend.unload();
      });

      it("rejects invalid load options with InvalidOptionError naming the option", async () => {
        const backend = makeBackend();
        const cases: Array<[LoadOptions, string]> = [
          [{ threads: 0 }, "threads"],
          [{ contextSize: 1.5 }, "contextSize"],
          [{ bogus: true } as LoadOptions, "bogus"],
        ];
        for (const [options, option] of cases) {
          await expect(backend.load(model.path, options)).rejects.toMatchObject({ name: "InvalidOptionError", option });
          expect(backend.isLoaded).toBe(false);
        }
      });

      it("rejects a missing model with ModelNotFoundError", async () => {
        const backend = makeBackend();
        const missing = join(tmp, "no-such-dir", basename(model.path));
        const error = await backend.load(missing, model.loadOptions).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(ModelNotFoundError);
        expect((error as MlxNodeError).code).toBe("MODEL_NOT_FOUND");
        expect((error as Error).message).toContain(missing);
        expect(backend.isLoaded).toBe(false);
        for (const { label, path } of await model.incompleteCopies(tmp)) {
          const incomplete = await backend.load(path, model.loadOptions).catch((e: unknown) => e);
          expect(incomplete, label).toBeInstanceOf(ModelNotFoundError);
          expect((incomplete as Error).message, label).toContain(path);
          expect(backend.isLoaded, label).toBe(false);
        }
      });

      it("rejects corrupt models with ModelFormatError naming the file, and stays usable", async () => {
        const backend = makeBackend();
        const copies = await model.corruptCopies(tmp);
        expect(copies.length).toBeGreaterThan(0);
        for (const { label, path } of copies) {
          const error = await backend.load(path, model.loadOptions).catch((e: unknown) => e);
          expect(error, label).toBeInstanceOf(ModelFormatError);
          expect((error as MlxNodeError).code, label).toBe("BAD_WEIGHTS");
          expect((error as Error).message, label).toContain(basename(path));
          expect(backend.isLoaded, label).toBe(false);
        }
        await load(backend);
        expect((await backend.generate(prompt, { maxTokens: 2 })).tokens).toEqual(expectedIds.slice(0, 2));
        await backend.unload();
      });
    });

    describe("generation", () => {
      let backend: InferenceBackend;
      beforeAll(async () => {
        backend = await load(makeBackend());
      });
      afterAll(async () => {
        await backend?.unload();
      });
      const gen = (p: string | readonly number[], options?: GenerateOptions) => backend.generate(p, options);

      it("greedy decoding matches the reference output and is deterministic", async () => {
        if (model.greedy.promptIds) expect(backend.tokenize(prompt, { addSpecialTokens: true })).toEqual([...model.greedy.promptIds]);
        const first = await gen(prompt, { maxTokens: expectedIds.length, temperature: 0 });
        expect(first.tokens).toEqual(expectedIds);
        expect(first.text).toBe(model.greedy.text);
        expect(first.finishReason).toBe("length");
        const second = await gen(prompt, { maxTokens: expectedIds.length });
        expect(second.tokens).toEqual(first.tokens);
        expect(second.text).toBe(first.text);
      });

      it("accepts token-id prompts", async () => {
        const ids = backend.tokenize(prompt, { addSpecialTokens: true });
        const result = await gen(ids, { maxTokens: 10 });
        expect(result.tokens).toEqual(expectedIds.slice(0, 10));
        expect(result.usage.promptTokens).toBe(ids.length);
        await expect(gen([backend.tokenize(prompt)[0], 1 << 30])).rejects.toMatchObject({ name: "InvalidOptionError", option: "prompt" });
      });

      it("seeded sampling at temperature 1 is reproducible and seeds differ", async () => {
        const sample = (seed: number) => gen(prompt, { temperature: 1, seed, maxTokens: 24 });
        const a = await sample(1234);
        const b = await sample(1234);
        expect(b.tokens).toEqual(a.tokens);
        expect(b.text).toBe(a.text);
        const texts = new Set<string>();
        for (const seed of [1, 2, 3, 4]) texts.add((await sample(seed)).text);
        expect(texts.size).toBeGreaterThan(1);
      });

      it("cuts at a stop string that spans a token boundary and does not emit it", async () => {
        const { stop, expectedText } = crossingStopString(backend, prompt, expectedIds, model.greedy.text);
        const stream = backend.generateStream(prompt, { maxTokens: expectedIds.length, stop: ["\u0000never", stop] });
        let streamed = "";
        for await (const chunk of stream) streamed += chunk.text;
        const result = await stream.result;
        expect(result.finishReason).toBe("stop");
        expect(result.stopSequence).toBe(stop);
        expect(result.text).toBe(expectedText);
        expect(streamed).toBe(expectedText);
        expect(streamed).not.toContain(stop);
        expect(result.tokens.length).toBeLessThan(expectedIds.length);
      });

      it("stops after exactly maxTokens with finishReason length", async () => {
        for (const maxTokens of [1, 7]) {
          const result = await gen(prompt, { maxTokens });
          expect(result.finishReason).toBe("length");
          expect(result.tokens).toEqual(expectedIds.slice(0, maxTokens));
          expect(result.usage.completionTokens).toBe(maxTokens);
        }
      });

      it("ends promptly with finishReason abort when aborted mid-stream", async () => {
        const controller = new AbortController();
        const maxTokens = 1000;
        const stream = backend.generateStream(prompt, { maxTokens, temperature: 0, signal: controller.signal });
        let chunks = 0;
        let abortedAt = 0;
        let chunksAfterAbort = 0;
        let streamedTokens = 0;
        for await (const chunk of stream) {
          streamedTokens += chunk.tokens.length;
          if (abortedAt) chunksAfterAbort++;
          if (++chunks === 3) {
            abortedAt = performance.now();
            controller.abort();
          }
        }
        const endedAfterMs = performance.now() - abortedAt;
        const result = await stream.result;
        expect(result.finishReason).toBe("abort");
        expect(endedAfterMs).toBeLessThan(1000);
        expect(chunksAfterAbort).toBeLessThanOrEqual(2);
        expect(result.tokens.length).toBe(streamedTokens);
        expect(result.tokens.length).toBeGreaterThanOrEqual(3);
        expect(result.tokens.length).toBeLessThan(maxTokens / 2);
        const known = Math.min(result.tokens.length, expectedIds.length);
        expect(result.tokens.slice(0, known)).toEqual(expectedIds.slice(0, known));
      });

      it("returns at once with finishReason abort for an already-aborted signal", async () => {
        const result = await gen(prompt, { maxTokens: 500, signal: AbortSignal.abort() });
        expect(result.finishReason).toBe("abort");
        expect(result.tokens.length).toBeLessThanOrEqual(1);
      });

      it("stream.result settles with the partial result and finishReason abort when the caller breaks out", async () => {
        const longLived = new AbortController().signal; // e.g. an app's shutdown signal, passed to every request
        const stream = backend.generateStream(prompt, { maxTokens: 1000, temperature: 0, signal: longLived });
        const seen: number[] = [];
        let text = "";
        for await (const chunk of stream) {
          seen.push(...chunk.tokens);
          text += chunk.text;
          if (seen.length >= 3) break;
        }
        const result = await stream.result;
        expect(result.finishReason).toBe("abort");
        expect(result.tokens).toEqual(seen);
        expect(result.tokens).toEqual(expectedIds.slice(0, seen.length));
        expect(result.text).toBe(text);
        expect(result.usage.completionTokens).toBe(seen.length);
        // The model was handed back: the next request runs at once.
        expect((await gen(prompt, { maxTokens: 3, signal: longLived })).tokens).toEqual(expectedIds.slice(0, 3));
        // Nothing stays attached to the caller's signal once a request has ended.
        expect(getEventListeners(longLived, "abort")).toHaveLength(0);
      });

      it("stream.result settles with finishReason abort when return() is called before iterating, even while queued", async () => {
        const untouched = backend.generateStream(prompt, { maxTokens: 50 });
        await untouched[Symbol.asyncIterator]().return!();
        expect(await untouched.result).toMatchObject({ finishReason: "abort", tokens: [], text: "" });

        // A request waiting behind running ones leaves the queue at once on return().
        const runners = Array.from({ length: model.parallel ?? 1 }, () => backend.generateStream(prompt, { maxTokens: 1000, ignoreEos: true }));
        const runnerIterators = runners.map((r) => r[Symbol.asyncIterator]());
        await Promise.all(runnerIterators.map((it) => it.next()));
        const queued = backend.generateStream(prompt, { maxTokens: 5 });
        const queuedIterator = queued[Symbol.asyncIterator]();
        const pending = queuedIterator.next();
        await new Promise((r) => setTimeout(r, 20));
        const left = performance.now();
        await queuedIterator.return!();
        expect(await pending).toMatchObject({ done: true });
        expect(await queued.result).toMatchObject({ finishReason: "abort", tokens: [] });
        expect(performance.now() - left).toBeLessThan(500);
        for (const it of runnerIterators) await it.return!();
        for (const r of runners) expect((await r.result).finishReason).toBe("abort");
        expect((await gen(prompt, { maxTokens: 2 })).tokens).toEqual(expectedIds.slice(0, 2));
      });

      it("a reader dropped mid-iteration (no break, no return()) gives the model back once it is garbage", async () => {
        setFlagsFromString("--expose-gc");
        const gc = runInNewContext("gc") as () => void;
        // Only the result is kept; the stream and its reader are unreachable once this returns.
        const { result } = await (async () => {
          const stream = backend.generateStream(prompt, { maxTokens: 1000, ignoreEos: true });
          await stream[Symbol.asyncIterator]().next();
          return { result: stream.result }; // wrapped: returning the promise itself would await it
        })();
        const next = backend.generate(prompt, { maxTokens: 2 });
        let finished = false;
        void next.then(() => (finished = true), () => (finished = true));
        const until = performance.now() + 5000;
        while (!finished && performance.now() < until) {
          gc();
          await new Promise((r) => setTimeout(r, 20));
        }
        expect(finished).toBe(true);
        expect((await next).tokens).toEqual(expectedIds.slice(0, 2));
        expect((await result).finishReason).toBe("abort");
      });

      it("stream.result awaited without iterating runs the generation to its end; a later iteration still gets every chunk", async () => {
        const n = Math.min(expectedIds.length, 16);
        const result = await backend.generateStream(prompt, { maxTokens: n }).result;
        expect(result.finishReason).toBe("length");
        expect(result.tokens).toEqual(expectedIds.slice(0, n));

        const stream = backend.generateStream(prompt, { maxTokens: n });
        const whole = await stream.result;
        const streamed: number[] = [];
        let text = "";
        for await (const chunk of stream) {
          streamed.push(...chunk.tokens);
          text += chunk.text;
        }
        expect(streamed).toEqual(whole.tokens);
        expect(text).toBe(whole.text);
      });

      it("streamed chunks concatenate to the same text and tokens as generate", async () => {
        const whole = await gen(prompt, { maxTokens: expectedIds.length });
        const stream = backend.generateStream(prompt, { maxTokens: expectedIds.length });
        let text = "";
        const tokens: number[] = [];
        let chunks = 0;
        for await (const chunk of stream) {
          chunks++;
          text += chunk.text;
          tokens.push(...chunk.tokens);
        }
        const result = await stream.result;
        expect(chunks).toBeGreaterThan(1);
        expect(text).toBe(whole.text);
        expect(tokens).toEqual(whole.tokens);
        expect(result.text).toBe(text);
        expect(result.tokens).toEqual(tokens);
      });

      it("round-trips text through tokenize and detokenize", () => {
        for (const text of model.roundTripTexts ?? DEFAULT_ROUND_TRIP) {
          const ids = backend.tokenize(text);
          expect(ids.length, text).toBeGreaterThan(0);
          expect(backend.detokenize(ids), text).toBe(text);
        }
        const withSpecial = backend.tokenize(prompt, { addSpecialTokens: true });
        const plain = backend.tokenize(prompt, { addSpecialTokens: false });
        expect(withSpecial.length).toBeGreaterThanOrEqual(plain.length);
        expect(`,${withSpecial.join(",")},`).toContain(`,${plain.join(",")},`);
        expect(backend.tokenize("")).toEqual([]);
        expect(() => backend.detokenize([-1])).toThrow(InvalidOptionError);
      });

      it("detokenize renders special tokens as their text, which tokenizes back to them (InferenceBackend.detokenize)", () => {
        const withSpecial = backend.tokenize(prompt, { addSpecialTokens: true });
        const plain = backend.tokenize(prompt, { addSpecialTokens: false });
        // The tokens addSpecialTokens added around the plain ones (BOS, maybe EOS).
        const at = withSpecial.findIndex((_, i) => plain.every((id, j) => withSpecial[i + j] === id));
        const specials = [...withSpecial.slice(0, at), ...withSpecial.slice(at + plain.length)];
        expect(specials.length, "the contract model adds a special token (BOS)").toBeGreaterThan(0);
        for (const id of specials) {
          const text = backend.detokenize([id]);
          expect(text, `token ${id}`).not.toBe("");
          expect(backend.tokenize(text), `token ${id} as ${JSON.stringify(text)}`).toEqual([id]);
          expect(backend.detokenize(withSpecial).startsWith(text)).toBe(true);
        }
      });

      it("rejects invalid options with InvalidOptionError naming the option, before any work", async () => {
        const cases: Array<[GenerateOptions, string]> = [
          [{ temperature: -1 }, "temperature"],
          [{ topP: 0 }, "topP"],
          [{ maxTokens: 0 }, "maxTokens"],
          [{ bogusOption: 1 } as GenerateOptions, "bogusOption"],
          [{ stop: [""] }, "stop"],
        ];
        for (const [options, option] of cases) {
          // Synchronous throw: nothing was queued or started.
          let thrown: unknown;
          try {
            backend.generateStream(prompt, options);
          } catch (error) {
            thrown = error;
          }
          expect(thrown, option).toBeInstanceOf(InvalidOptionError);
          expect((thrown as InvalidOptionError).option).toBe(option);
          expect((thrown as InvalidOptionError).message).toContain(option);
          await expect(gen(prompt, options)).rejects.toMatchObject({ name: "InvalidOptionError", code: "INVALID_OPTION", option });
        }
        // The backend is unaffected.
        expect((await gen(prompt, { maxTokens: 4 })).tokens).toEqual(expectedIds.slice(0, 4));
      });

      it("accepts every sampling parameter at both ends of its range (lib/sampling.ts) and rejects values just outside, naming it", async () => {
        for (const [name, values] of Object.entries(samplingEdges())) {
          for (const value of values.inside) {
            // maxTokens at its top would generate until the context is full: bounds other than its own keep it short.
            const options = { maxTokens: 2, temperature: 1, seed: 3, [name]: name === "maxTokens" ? Math.min(value, 2) : value };
            const result = await gen(prompt, options);
            expect(result.tokens.length, `${name}: ${value}`).toBeGreaterThan(0);
          }
          for (const value of values.outside) {
            await expect(gen(prompt, { [name]: value }), `${name}: ${value}`).rejects.toSatisfy(
              (error) => error instanceof InvalidOptionError && error.option === name && error.message.includes(describeRange(SAMPLING_PARAMETERS[name as SamplingParameterName])),
            );
          }
        }
      });

      it("reports sane usage and timings", async () => {
        const text = "The little dog ran to the park";
        const result = await gen(text, { maxTokens: 16 });
        const { usage, timings } = result;
        expect(usage.promptTokens).toBe(backend.tokenize(text, { addSpecialTokens: true }).length);
        expect(usage.completionTokens).toBe(result.tokens.length);
        expect(usage.totalTokens).toBe(usage.promptTokens + usage.completionTokens);
        expect(usage.evaluatedPromptTokens).toBeGreaterThanOrEqual(1);
        expect(usage.evaluatedPromptTokens).toBeLessThanOrEqual(usage.promptTokens);
        for (const [key, value] of Object.entries(timings)) {
          expect(Number.isFinite(value), key).toBe(true);
          expect(value, key).toBeGreaterThanOrEqual(0);
        }
        expect(timings.totalMs).toBeGreaterThanOrEqual(timings.timeToFirstTokenMs);
        expect(timings.timeToFirstTokenMs).toBeGreaterThan(0);
        expect(timings.promptTokensPerSecond).toBeGreaterThan(0);
        if (result.tokens.length > 1) expect(timings.generatedTokensPerSecond).toBeGreaterThan(0);
      });

      it("keeps the event loop running during generation", async () => {
        let ticks = 0;
        let last = performance.now();
        let maxGap = 0;
        const timer = setInterval(() => {
          const now = performance.now();
          maxGap = Math.max(maxGap, now - last);
          last = now;
          ticks++;
        }, 2);
        const start = performance.now();
        let generated = 0;
        try {
          let seed = 0;
          while (performance.now() - start < 300) {
            generated += (await gen(prompt, { maxTokens: 64, temperature: 1, seed: seed++ })).tokens.length;
          }
        } finally {
          clearInterval(timer);
        }
        const elapsed = performance.now() - start;
        maxGap = Math.max(maxGap, performance.now() - last);
        expect(generated).toBeGreaterThan(0);
        // A 2 ms interval on a free loop fires ~elapsed/2 times; allow for a busy shared machine.
        expect(ticks).toBeGreaterThan(elapsed / 10);
        expect(maxGap).toBeLessThan(200);
      });

      it("reuses the KV cache: an extended prompt evaluates only the new tokens, with unchanged output", async () => {
        const base = "The little dog ran to the park";
        const first = await gen(base, { maxTokens: 8 });
        const extended = `${base}${first.text} He saw a big tree`;
        const second = await gen(extended, { maxTokens: 12 });
        const baseIds = backend.tokenize(base, { addSpecialTokens: true });
        const extendedIds = backend.tokenize(extended, { addSpecialTokens: true });
        expect(second.usage.promptTokens).toBe(extendedIds.length);
        expect(second.usage.evaluatedPromptTokens).toBeGreaterThanOrEqual(1);
        expect(second.usage.evaluatedPromptTokens).toBeLessThan(second.usage.promptTokens);
        expect(second.usage.evaluatedPromptTokens).toBeLessThanOrEqual(Math.max(1, extendedIds.length - commonPrefix(baseIds, extendedIds)));
        // The same request on a fresh backend evaluates everything and gives the same tokens.
        const fresh = await load(makeBackend());
        let reference: GenerateResult;
        try {
          reference = await fresh.generate(extended, { maxTokens: 12 });
        } finally {
          await fresh.unload();
        }
        expect(reference.usage.evaluatedPromptTokens).toBe(reference.usage.promptTokens);
        expect(second.tokens).toEqual(reference.tokens);
        // Going back to a shorter prompt reuses its prefix too.
        const third = await gen(base, { maxTokens: 8 });
        expect(third.tokens).toEqual(first.tokens);
        expect(third.usage.evaluatedPromptTokens).toBeLessThan(third.usage.promptTokens);
      });
    });

    it("stops with finishReason length when the context is full", async () => {
      const backend = await load(makeBackend(), { contextSize: 256 });
      try {
        const size = backend.contextSize;
        const story = backend.tokenize(`${prompt}${model.greedy.text}`);
        const ids = backend.tokenize(prompt, { addSpecialTokens: true });
        while (ids.length < size - 8) ids.push(...story);
        ids.length = size - 8;
        const result = await backend.generate(ids, { maxTokens: 64 });
        expect(result.finishReason).toBe("length");
        expect(result.usage.completionTokens).toBeGreaterThan(0);
        expect(result.usage.totalTokens).toBeLessThanOrEqual(size);
        // A prompt as long as the context is rejected up front.
        await expect(backend.generate(new Array(size).fill(ids[1]))).rejects.toMatchObject({ name: "InvalidOptionError", option: "prompt" });
      } finally {
        await backend.unload();
      }
    });
  });
}

function commonPrefix(a: readonly number[], b: readonly number[]): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

/**
 * Picks a stop string from the middle of the known greedy text that crosses a token boundary:
 * the last two characters of one token and the first two of the next, where the string does
 * not occur earlier in the text. Token boundaries come from the backend's own detokenizer.
 */
function crossingStopString(
  backend: InferenceBackend, prompt: string, ids: readonly number[], text: string,
): { stop: string; expectedText: string } {
  const promptIds = backend.tokenize(prompt, { addSpecialTokens: true });
  const promptText = backend.detokenize(promptIds);
  expect(backend.detokenize([...promptIds, ...ids]).slice(promptText.length)).toBe(text);
  // ends[k] = length of the text generated by tokens 0..k.
  const ends = ids.map((_, k) => backend.detokenize([...promptIds, ...ids.slice(0, k + 1)]).length - promptText.length);
  for (let k = Math.floor(ids.length / 2); k < ids.length; k++) {
    const start = k >= 2 ? ends[k - 2] : 0;
    const boundary = ends[k - 1];
    if (boundary - start < 2 || ends[k] - boundary < 2) continue;
    const stop = text.slice(boundary - 2, boundary + 2);
    if (text.indexOf(stop) !== boundary - 2) continue;
    return { stop, expectedText: text.slice(0, boundary - 2) };
  }
  throw new Error("no stop string crossing a token boundary found in the reference text");
}

/** Per sampling parameter: the ends of its range, and values just outside it (and a fraction for integers). */
export function samplingEdges(): Record<string, { inside: number[]; outside: number[] }> {
  return Object.fromEntries(SAMPLING_PARAMETER_NAMES.map((name) => {
    const p = SAMPLING_PARAMETERS[name] as { type: string; min: number; max: number; minExclusive?: boolean };
    const integer = p.type === "integer";
    const step = integer ? 1 : 0.001;
    const inside = [p.minExclusive ? p.min + step : p.min, p.max];
    const outside = [p.minExclusive ? p.min : p.min - step, p.max + step, Number.NaN, ...(integer ? [p.min + 0.5] : [])];
    return [name, { inside, outside }];
  }));
}
