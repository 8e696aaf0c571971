import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { DETOKENIZER_CONTEXT, StreamingDetokenizer } from "../lib/detokenizer.js";
import { Tokenizer } from "../lib/tokenizer.js";

const MODELS = fileURLToPath(new URL("../../shared/models/", import.meta.url));
const STORIES = join(MODELS, "stories260K/hf-f32");
const LLAMA2 = join(MODELS, "tokenizers/llama2");
const LLAMA32 = join(MODELS, "tokenizers/llama3.2-reconstructed");

const cache = new Map<string, Promise<Tokenizer>>();
function load(dir: string): Promise<Tokenizer> {
  let tokenizer = cache.get(dir);
  if (!tokenizer) cache.set(dir, (tokenizer = Tokenizer.fromDirectory(dir)));
  return tokenizer;
}

/** Feeds `ids` one at a time, as a generation loop does; the last chunk is `flush()`'s. */
function stream(tokenizer: Tokenizer, ids: readonly number[], context: readonly number[] = []): string[] {
  const detokenizer = new StreamingDetokenizer((window) => tokenizer.decode(window), context);
  const chunks = ids.map((id) => detokenizer.push([id]));
  chunks.push(detokenizer.flush());
  return chunks;
}

const reference = JSON.parse(readFileSync(join(MODELS, "stories260K/expected/greedy-once-upon-a-time.json"), "utf8")) as {
  prompt_ids: number[];
  gguf_llama_cpp: { ids: number[]; text: string };
};

const MULTIBYTE_TEXTS = [
  "Party 🎉 time 😀!",
  "🦙🦙🦙",
  "家族 👨‍👩‍👧‍👦 and 👍🏽 ok",
  "日本語のテキスト、中文文本，한국어 텍스트",
  "naïve café ½ € — “quoted”",
  "emoji at the end 🚀",
];

/** Every chunk, and the check that no chunk shows a replacement character the full text does not have. */
function expectCleanStream(tokenizer: Tokenizer, ids: readonly number[], context: readonly number[] = []): string[] {
  const chunks = stream(tokenizer, ids, context);
  const full = tokenizer.decode([...context, ...ids]);
  const before = tokenizer.decode(context);
  expect(full.startsWith(before)).toBe(true);
  expect(chunks.join("")).toBe(full.slice(before.length));
  if (!full.includes("\uFFFD")) for (const chunk of chunks) expect(chunk).not.toContain("\uFFFD");
  return chunks;
}

describe("StreamingDetokenizer over stories260K (SentencePiece with byte fallback)", () => {
  it("streams llama.cpp's greedy continuation exactly, with the prompt as context", async () => {
    const tokenizer = await load(STORIES);
    const { prompt_ids, gguf_llama_cpp } = reference;
    const chunks = stream(tokenizer, gguf_llama_cpp.ids, prompt_ids.slice(-DETOKENIZER_CONTEXT));
    expect(chunks.join("")).toBe(gguf_llama_cpp.text);
    expect(chunks.join("")).toBe(tokenizer.decode([...prompt_ids, ...gguf_llama_cpp.ids]).slice("Once upon a time".length));
    // One chunk per token: nothing is held back for plain text.
    expect(chunks.slice(0, 3)).toEqual([",", " there", " was"]);
  });

  it("the first generated token keeps its leading space when given prompt context", async () => {
    const tokenizer = await load(STORIES);
    const prompt = tokenizer.encode("Once upon a time, there", { addSpecialTokens: true });
    // What the model generates after the prompt: the tail of the whole text's ids ("▁was", "▁a", …).
    // (Encoding " was a girl" on its own would give an extra "▁": SentencePiece's dummy prefix.)
    const all = tokenizer.encode("Once upon a time, there was a girl", { addSpecialTokens: true });
    expect(all.slice(0, prompt.length)).toEqual(prompt);
    const generated = all.slice(prompt.length);
    expect(tokenizer.idToToken(generated[0])).toBe("▁was");
    const withContext = stream(tokenizer, generated, prompt.slice(-DETOKENIZER_CONTEXT));
    expect(withContext[0]).toBe(" was");
    expect(withContext.join("")).toBe(" was a girl");
    // Without context the decoder strips SentencePiece's leading space, as it does at the start of a text.
    expect(stream(tokenizer, generated)[0]).toBe("was");
  });

  it("context that is only BOS: the first word has no leading space, like decode()", async () => {
    const tokenizer = await load(STORIES);
    const ids = tokenizer.encode("Once upon a time");
    const chunks = expectCleanStream(tokenizer, ids, [1]);
    expect(chunks.join("")).toBe("Once upon a time");
  });

  it("an emoji split over four byte-fallback tokens never shows U+FFFD", async () => {
    const tokenizer = await load(STORIES);
    const ids = tokenizer.encode("Party 🎉 time");
    const bytes = ids.filter((id) => (tokenizer.idToToken(id) ?? "").startsWith("<0x"));
    expect(bytes.map((id) => tokenizer.idToToken(id))).toEqual(["<0xF0>", "<0x9F>", "<0x8E>", "<0x89>"]);
    const chunks = expectCleanStream(tokenizer, ids, [1]);
    expect(chunks).toContain("🎉");
    for (const text of MULTIBYTE_TEXTS) expectCleanStream(tokenizer, tokenizer.encode(text), [1]);
  });

  it("special tokens in the stream (skipped by decode) produce no text and break nothing", async () => {
    const tokenizer = await load(STORIES);
    const text = tokenizer.encode("Hi 🎉 there");
    const cut = text.indexOf(tokenizer.tokenToId("▁there")!);
    const ids = [...text.slice(0, cut), 2, 1, ...text.slice(cut)];
    const chunks = expectCleanStream(tokenizer, ids, [1]);
    expect(chunks.join("")).toBe("Hi 🎉 there");
  });

  it("an incomplete character left at the end comes out of flush() as U+FFFD", async () => {
    const tokenizer = await load(STORIES);
    const ids = tokenizer.encode("ok 🎉").slice(0, -2); // drop the last two byte tokens
    const chunks = stream(tokenizer, ids, [1]);
    expect(chunks.slice(0, -1).join("")).toBe("ok ");
    expect(chunks[chunks.length - 1]).toBe("\uFFFD");
    expect(chunks.join("")).toBe(tokenizer.decode(ids));
  });

  it("random token sequences: the chunks always add up to decode(all)", async () => {
    // Random ids over the whole 512-token vocab, about half byte tokens, so the stream is full of
    // incomplete and invalid UTF-8; the concatenation must still equal one decode of everything.
    const tokenizer = await load(STORIES);
    const random = mulberry32(12345);
    for (let run = 0; run < 300; run++) {
      const ids = Array.from({ length: 1 + Math.floor(random() * 24) }, () =>
        random() < 0.5 ? 3 + Math.floor(random() * 256) : Math.floor(random() * tokenizer.vocabSize),
      );
      const split = Math.floor(random() * Math.min(ids.length, DETOKENIZER_CONTEXT + 1));
      const context = ids.slice(0, split);
      const generated = ids.slice(split);
      const full = tokenizer.decode(ids);
      const before = tokenizer.decode(context);
      const out = stream(tokenizer, generated, context).join("");
      if (full.startsWith(before)) expect(out, JSON.stringify(ids)).toBe(full.slice(before.length));
      else expect(before.endsWith("\uFFFD"), JSON.stringify(ids)).toBe(true); // context ends mid-character
      if (context.length === 0) expect(out, JSON.stringify(ids)).toBe(full);
    }
  });
});

describe("StreamingDetokenizer over Llama-3.2 (byte-level BPE)", () => {
  it("multi-byte characters split across tokens never show U+FFFD", async () => {
    const tokenizer = await load(LLAMA32);
    let splitCharacters = 0;
    for (const text of MULTIBYTE_TEXTS) {
      const ids = tokenizer.encode(text);
      splitCharacters += ids.filter((id) => tokenizer.decode([id]).includes("\uFFFD")).length;
      const chunks = expectCleanStream(tokenizer, ids, [128000]);
      expect(chunks.join("")).toBe(text);
    }
    expect(splitCharacters).toBeGreaterThan(0); // the test really covers tokens that end mid-character
  });

  it("the first generated token keeps its leading space when given prompt context", async () => {
    const tokenizer = await load(LLAMA32);
    const prompt = tokenizer.encode("The capital of France is", { addSpecialTokens: true });
    const generated = tokenizer.encode(" Paris. 🇫🇷");
    const chunks = expectCleanStream(tokenizer, generated, prompt.slice(-DETOKENIZER_CONTEXT));
    expect(chunks[0]).toBe(" Paris");
    expect(chunks.join("")).toBe(" Paris. 🇫🇷");
  });

  it("an end-of-turn token ends the text without leaving anything behind", async () => {
    const tokenizer = await load(LLAMA32);
    const ids = [...tokenizer.encode("Done ✅"), 128009];
    const chunks = expectCleanStream(tokenizer, ids, [128000]);
    expect(chunks.join("")).toBe("Done ✅");
  });
});

describe("StreamingDetokenizer over Llama 2 (SentencePiece, 32k vocab)", () => {
  it("streams CJK and emoji (byte fallback) with leading spaces intact", async () => {
    const tokenizer = await load(LLAMA2);
    for (const text of MULTIBYTE_TEXTS) {
      const ids = tokenizer.encode(text);
      for (let split = 1; split < ids.length; split++) {
        const context = ids.slice(Math.max(0, split - DETOKENIZER_CONTEXT), split);
        if (tokenizer.decode(context).endsWith("\uFFFD")) continue; // a prompt does not end mid-character
        expectCleanStream(tokenizer, ids.slice(split), context);
      }
    }
  });
});

/** Small seeded PRNG so the random test is reproducible. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
