/**
 * The GGUF backend (node-llama-cpp): the shared backend contract on stories260K.gguf, plus
 * GGUF-specific checks (thread default, a 32k-vocab model, end-of-generation tokens, leaks).
 */
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { DEFAULT_GGUF_MAX_BATCH, defaultGgufThreads, GgufBackend, prefillThreadsFor, SMALL_MODEL_BYTES, TINY_MODEL_MIN_PARALLEL_BATCH } from "../lib/backends/gguf.js";
import { BackendUnavailableError, UnsupportedArchitectureError } from "../lib/errors.js";
import { backendContractSuite } from "./contract/backend.contract.js";

const MODELS = fileURLToPath(new URL("../../shared/models/", import.meta.url));
const STORIES = join(MODELS, "stories260K/stories260K.gguf");
const TINY_RANDOM = join(MODELS, "llama-2-tiny-random/llama-2-tiny-random.gguf");

interface GreedyRow {
  ids: number[];
  text: string;
}
const reference = JSON.parse(readFileSync(join(MODELS, "stories260K/expected/greedy-once-upon-a-time.json"), "utf8")) as {
  prompt: string;
  prompt_ids: number[];
  gguf_llama_cpp: GreedyRow;
};

backendContractSuite("gguf", () => new GgufBackend(), {
  path: STORIES,
  loadOptions: { threads: 1 },
  parallel: DEFAULT_GGUF_MAX_BATCH,
  greedy: {
    prompt: reference.prompt,
    promptIds: reference.prompt_ids,
    ids: reference.gguf_llama_cpp.ids,
    text: reference.gguf_llama_cpp.text,
  },
  async corruptCopies(dir) {
    const bytes = await readFile(STORIES);
    const truncated = join(dir, "truncated.gguf");
    await writeFile(truncated, bytes.subarray(0, Math.floor(bytes.length / 2)));
    const headerOnly = join(dir, "header-cut.gguf");
    await writeFile(headerOnly, bytes.subarray(0, 2000));
    const text = join(dir, "notes.gguf");
    await writeFile(text, "These are my notes, not a model.\n");
    const empty = join(dir, "empty.gguf");
    await writeFile(empty, "");
    return [
      { label: "truncated copy", path: truncated },
      { label: "copy cut inside the metadata", path: headerOnly },
      { label: "text file renamed .gguf", path: text },
      { label: "empty file", path: empty },
    ];
  },
  async incompleteCopies(dir) {
    const folder = join(dir, "a-folder.gguf");
    await mkdir(folder, { recursive: true });
    return [{ label: "a directory instead of a .gguf file", path: folder }];
  },
});

describe("gguf backend specifics", () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "mlx-node-gguf-"));
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it("has name gguf", () => {
    expect(new GgufBackend().name).toBe("gguf");
  });

  describe("thread default", () => {
    it("follows the documented rule", () => {
      const big = 2 * SMALL_MODEL_BYTES;
      const small = SMALL_MODEL_BYTES - 1;
      expect(defaultGgufThreads(1_185_376, 8, 16)).toEqual({ prefill: 8, decode: 1 }); // tiny: decode on 1 thread on any machine
      expect(defaultGgufThreads(small, 2, 2)).toEqual({ prefill: 2, decode: 1 });
      expect(defaultGgufThreads(big, 2, 2)).toEqual({ prefill: 2, decode: 2 }); // larger: one thread per physical core
      expect(defaultGgufThreads(big, 8, 16)).toEqual({ prefill: 8, decode: 8 }); // not the SMT siblings
      expect(defaultGgufThreads(big, 8, 4)).toEqual({ prefill: 4, decode: 4 }); // never more than the available cores
      expect(defaultGgufThreads(big, 1, 1)).toEqual({ prefill: 1, decode: 1 });
      expect(defaultGgufThreads(big, 0, 0)).toEqual({ prefill: 1, decode: 1 });
    });

    it("runs a tiny model's short prompt batches on decode's thread, everything else on prefill's", () => {
      const counts = { prefill: 2, decode: 1 };
      expect(prefillThreadsFor(1, 1_185_376, counts)).toBe(1);
      expect(prefillThreadsFor(TINY_MODEL_MIN_PARALLEL_BATCH - 1, 1_185_376, counts)).toBe(1);
      expect(prefillThreadsFor(TINY_MODEL_MIN_PARALLEL_BATCH, 1_185_376, counts)).toBe(2);
      expect(prefillThreadsFor(1, 100 * 2 ** 20, counts)).toBe(2); // real sizes gain from every core at any batch
    });

    it("decodes stories260K on 1 thread and prefills on every core when threads is not given, as llama.cpp reports", async () => {
      const backend = new GgufBackend();
      await backend.load(STORIES);
      try {
        const expected = defaultGgufThreads((await stat(STORIES)).size, availableParallelism());
        expect(backend.threadCount).toBe(1);
        expect(backend.threadCounts).toEqual(expected);
        expect(backend.contextSize).toBe(2048); // min(train context 2048, 4096)
        const result = await backend.generate(reference.prompt, { maxTokens: 40 });
        expect(result.text).toBe(reference.gguf_llama_cpp.text);
        // llama_n_threads for the batch that produced the first token and for the next one: a
        // tiny model's short prompt stays on decode's thread (see prefillThreadsFor).
        expect(backend.lastRequestThreads).toEqual({ prefill: expected.decode, decode: expected.decode });
        // A long prompt spanning several batches runs them on prefill's threads, and gives the same
        // text as one evaluated on a single thread count.
        const prompt = `${reference.prompt}${" and then".repeat(300)}`;
        const split = await backend.generate(prompt, { maxTokens: 16 });
        expect(split.usage.evaluatedPromptTokens).toBeGreaterThan(600);
        expect(backend.lastRequestThreads).toEqual({ prefill: expected.prefill, decode: expected.decode });
        const single = new GgufBackend();
        await single.load(STORIES, { threads: 1 });
        try {
          expect(single.threadCounts).toEqual({ prefill: 1, decode: 1 });
          expect((await single.generate(prompt, { maxTokens: 16 })).tokens).toEqual(split.tokens);
        } finally {
          await single.unload();
        }
      } finally {
        await backend.unload();
      }
    });

    it("never uses more threads than available cores", async () => {
      const backend = new GgufBackend();
      await backend.load(STORIES, { threads: 1024 });
      try {
        expect(backend.threadCount).toBeLessThanOrEqual(availableParallelism());
        expect(backend.threadCount).toBeGreaterThanOrEqual(1);
      } finally {
        await backend.unload();
      }
    });
  });

  describe("llama-2-tiny-random (32k Llama-2 vocab)", () => {
    const backend = new GgufBackend();
    beforeAll(async () => {
      await backend.load(TINY_RANDOM, { threads: 1 });
    });
    afterAll(async () => {
      await backend.unload();
    });

    it("loads with the trained context (4096) and tokenizes like llama.cpp's Llama-2 vectors", () => {
      expect(backend.contextSize).toBe(4096);
      const texts = readFileSync(join(MODELS, "ggml-vocab/ggml-vocab-llama-spm.gguf.inp"), "utf8").split("\n__ggml_vocab_test__\n");
      texts.pop();
      const lines = readFileSync(join(MODELS, "ggml-vocab/ggml-vocab-llama-spm.gguf.out"), "utf8").split("\n");
      lines.pop();
      expect(lines.length).toBe(texts.length);
      texts.forEach((text, i) => {
        const expected = lines[i].trim() ? lines[i].trim().split(/\s+/).map(Number) : [];
        const ids = backend.tokenize(text);
        expect(ids, JSON.stringify(text)).toEqual(expected);
        expect(backend.detokenize(ids), JSON.stringify(text)).toBe(text);
      });
      expect(backend.tokenize("Hello world", { addSpecialTokens: true })).toEqual([1, 15043, 3186]);
    });

    it("accepts token ids up to the vocab size and generates", async () => {
      const result = await backend.generate([1, 31999], { maxTokens: 4 });
      expect(result.tokens).toHaveLength(4);
      expect(result.tokens.every((t) => t >= 0 && t < 32000)).toBe(true);
      await expect(backend.generate([1, 32000])).rejects.toMatchObject({ name: "InvalidOptionError", option: "prompt" });
    });
  });

  it("stops with finishReason stop at an end-of-generation token", async () => {
    // stories260K never emits </s> within 1,500 tokens, so make "." (id 426) the EOS token in a copy.
    const bytes = Buffer.from(await readFile(STORIES));
    const key = Buffer.from("tokenizer.ggml.eos_token_id");
    const at = bytes.indexOf(key) + key.length;
    expect(bytes.readUInt32LE(at)).toBe(4); // GGUF value type UINT32
    expect(bytes.readUInt32LE(at + 4)).toBe(2);
    bytes.writeUInt32LE(426, at + 4);
    const patched = join(tmp, "stories-eos-dot.gguf");
    await writeFile(patched, bytes);
    const backend = new GgufBackend();
    await backend.load(patched, { threads: 1 });
    try {
      const result = await backend.generate(reference.prompt, { maxTokens: 40 });
      const firstDot = reference.gguf_llama_cpp.ids.indexOf(426);
      expect(result.finishReason).toBe("stop");
      expect(result.stopSequence).toBeUndefined();
      expect(result.tokens).toEqual(reference.gguf_llama_cpp.ids.slice(0, firstDot));
      expect(result.text).toBe(", there was a little girl named Lily");
      // ignoreEos keeps going through the end-of-generation token, up to maxTokens.
      const through = await backend.generate(reference.prompt, { maxTokens: 40, ignoreEos: true });
      expect(through.finishReason).toBe("length");
      expect(through.tokens).toEqual(reference.gguf_llama_cpp.ids);
    } finally {
      await backend.unload();
    }
  });

  it("reports an architecture llama.cpp does not know as UnsupportedArchitectureError", async () => {
    const bytes = Buffer.from(await readFile(STORIES));
    const at = bytes.indexOf("general.architecture");
    const value = bytes.indexOf("llama", at);
    bytes.write("llamx", value, "latin1");
    const patched = join(tmp, "unknown-arch.gguf");
    await writeFile(patched, bytes);
    const backend = new GgufBackend();
    const error = await backend.load(patched, { threads: 1 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnsupportedArchitectureError);
    expect((error as Error).message).toContain("llamx");
    expect((error as Error).message).toContain("unknown-arch.gguf");
    expect(backend.isLoaded).toBe(false);
  });

  it("refuses a second load started while the first is still loading", async () => {
    const backend = new GgufBackend();
    const results = await Promise.allSettled([backend.load(STORIES, { threads: 1 }), backend.load(STORIES, { threads: 1 })]);
    try {
      expect(results.map((r) => r.status).sort()).toEqual(["fulfilled", "rejected"]);
      const rejected = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
      expect(rejected?.reason).toMatchObject({ code: "ALREADY_LOADED" });
      expect(backend.isLoaded).toBe(true);
    } finally {
      await backend.unload();
    }
  });

  describe("chat", () => {
    const template = "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}";

    it("uses the chat template from the GGUF metadata, with BOS parsed as the special token", async () => {
      const withTemplate = join(tmp, "stories-with-template.gguf");
      await writeFile(withTemplate, addGgufStringKv(await readFile(STORIES), "tokenizer.chat_template", template));
      const backend = new GgufBackend();
      await backend.load(withTemplate, { threads: 1 });
      try {
        const result = await backend.chat([{ role: "user", content: reference.prompt }], { maxTokens: 40 });
        // "<s>Once upon a time" tokenizes to the reference prompt ids, so the answer is the reference text.
        expect(result.usage.promptTokens).toBe(reference.prompt_ids.length);
        expect(result.text).toBe(reference.gguf_llama_cpp.text);
        expect(result.message).toEqual({ role: "assistant", content: reference.gguf_llama_cpp.text });
      } finally {
        await backend.unload();
      }
    });

    it("without a template in the file, asks for one and accepts the chatTemplate option", async () => {
      const backend = new GgufBackend();
      await backend.load(STORIES, { threads: 1 });
      try {
        const messages = [{ role: "user" as const, content: reference.prompt }];
        await expect(backend.chat(messages)).rejects.toMatchObject({ code: "CHAT_TEMPLATE_ERROR", message: expect.stringContaining("stories260K.gguf") });
        const result = await backend.chat(messages, { chatTemplate: template, maxTokens: 10 });
        expect(result.tokens).toEqual(reference.gguf_llama_cpp.ids.slice(0, 10));
      } finally {
        await backend.unload();
      }
    });
  });

  it("fills the context exactly: prompt + completion = contextSize", async () => {
    const backend = new GgufBackend();
    await backend.load(STORIES, { threads: 1, contextSize: 256 });
    try {
      expect(backend.contextSize).toBe(256);
      const story = backend.tokenize(reference.prompt + reference.gguf_llama_cpp.text);
      const ids = [1];
      while (ids.length < 250) ids.push(...story);
      ids.length = 250;
      const result = await backend.generate(ids, { maxTokens: 100 });
      expect(result.finishReason).toBe("length");
      expect(result.usage.completionTokens).toBe(6);
    } finally {
      await backend.unload();
    }
  });

  it("applies the repetition penalty", async () => {
    const backend = new GgufBackend();
    await backend.load(STORIES, { threads: 1 });
    try {
      const plain = await backend.generate(reference.prompt, { maxTokens: 40 });
      const penalised = await backend.generate(reference.prompt, { maxTokens: 40, repetitionPenalty: 1.5 });
      expect(penalised.tokens).not.toEqual(plain.tokens);
      const again = await backend.generate(reference.prompt, { maxTokens: 40, repetitionPenalty: 1.5 });
      expect(again.tokens).toEqual(penalised.tokens);
    } finally {
      await backend.unload();
    }
  });

  it("does not leak across load/unload cycles", async () => {
    const backend = new GgufBackend();
    const cycle = async () => {
      // One llama.cpp sequence: RSS noise grows with the KV allocated per load (48-130 MB over 30
      // cycles with the 17-20 sequences of the default prompt cache, still far below 30 leaked
      // contexts of ~22 MB), so the bound below is calibrated for one.
      await backend.load(STORIES, { threads: 1, promptCacheBytes: 0 });
      await backend.generate(reference.prompt, { maxTokens: 8 });
      await backend.unload();
    };
    // RSS climbs for the first ~25 cycles as glibc's arenas fill, then stays flat (raw
    // node-llama-cpp does the same). Measured after that: +5-12 MB over 125 more cycles.
    for (let i = 0; i < 25; i++) await cycle();
    const before = process.memoryUsage().rss;
    for (let i = 0; i < 30; i++) await cycle();
    const grownMb = (process.memoryUsage().rss - before) / 2 ** 20;
    // A leaked model + 2048-token context is about 3 MB: 30 of them would be ~90 MB.
    expect(grownMb).toBeLessThan(40);
  });

  it("reports a missing node-llama-cpp as BackendUnavailableError", async () => {
    vi.resetModules();
    vi.doMock("node-llama-cpp", () => {
      throw Object.assign(new Error("Cannot find package 'node-llama-cpp' imported from /app/lib/backends/gguf.js"), {
        code: "ERR_MODULE_NOT_FOUND",
      });
    });
    try {
      const { GgufBackend: Isolated } = await import("../lib/backends/gguf.js");
      const error = await new Isolated().load(STORIES).catch((e: unknown) => e);
      // A fresh module graph has its own error classes: compare by name and code.
      expect(error).toMatchObject({ name: "BackendUnavailableError", code: "BACKEND_UNAVAILABLE" });
      expect((error as BackendUnavailableError).reason).toBe("node-llama-cpp is not installed: run npm install node-llama-cpp");
    } finally {
      vi.doUnmock("node-llama-cpp");
      vi.resetModules();
    }
  });
});

/**
 * Returns a copy of a GGUF (v2/v3) file with one more string key/value in its metadata. Tensor
 * offsets are relative to the aligned data section, so the data is copied unchanged after
 * re-aligning it.
 */
function addGgufStringKv(file: Buffer, key: string, value: string): Buffer {
  let at = 0;
  const u32 = () => ((at += 4), file.readUInt32LE(at - 4));
  const u64 = () => ((at += 8), Number(file.readBigUInt64LE(at - 8)));
  const str = () => {
    const n = u64();
    at += n;
    return file.toString("utf8", at - n, at);
  };
  const sizes: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
  const skipValue = (type: number): void => {
    if (type === 8) str();
    else if (type === 9) {
      const itemType = u32();
      const count = u64();
      for (let i = 0; i < count; i++) skipValue(itemType);
    } else at += sizes[type];
  };
  expect(file.toString("latin1", 0, 4)).toBe("GGUF");
  at = 8;
  const tensorCount = u64();
  const kvCountAt = at;
  const kvCount = u64();
  let alignment = 32;
  for (let i = 0; i < kvCount; i++) {
    const name = str();
    const type = u32();
    if (name === "general.alignment") alignment = file.readUInt32LE(at);
    skipValue(type);
  }
  const kvEnd = at;
  for (let i = 0; i < tensorCount; i++) {
    str();
    const dims = u32();
    at += dims * 8 + 4 + 8;
  }
  const infoEnd = at;
  const dataStart = Math.ceil(infoEnd / alignment) * alignment;
  const encode = (s: string) => {
    const bytes = Buffer.from(s, "utf8");
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(bytes.length));
    return Buffer.concat([length, bytes]);
  };
  const type = Buffer.alloc(4);
  type.writeUInt32LE(8);
  const head = Buffer.concat([
    file.subarray(0, kvEnd),
    encode(key),
    type,
    encode(value),
    file.subarray(kvEnd, infoEnd),
  ]);
  head.writeBigUInt64LE(BigInt(kvCount + 1), kvCountAt);
  const padding = Buffer.alloc((alignment - (head.length % alignment)) % alignment);
  return Buffer.concat([head, padding, file.subarray(dataStart)]);
}
