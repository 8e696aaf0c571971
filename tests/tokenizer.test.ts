import { mkdir, mkdtemp, rm, writeFile, copyFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MlxNodeError, ModelNotFoundError } from "../lib/errors.js";
import { Tokenizer } from "../lib/tokenizer.js";

const MODELS = fileURLToPath(new URL("../../shared/models/", import.meta.url));
const STORIES = join(MODELS, "stories260K/hf-f32");
const LLAMA2 = join(MODELS, "tokenizers/llama2");
const PHI3 = join(MODELS, "tokenizers/phi-3-mini");
const LLAMA32 = join(MODELS, "tokenizers/llama3.2-reconstructed");

// Loading the 8 MB Llama-3.2 tokenizer.json takes about a second: load each directory once per file.
const cache = new Map<string, Promise<Tokenizer>>();
function load(dir: string): Promise<Tokenizer> {
  let tokenizer = cache.get(dir);
  if (!tokenizer) cache.set(dir, (tokenizer = Tokenizer.fromDirectory(dir)));
  return tokenizer;
}

/** llama.cpp's test-tokenizer-0 format: `.inp` holds strings each followed by `\n__ggml_vocab_test__\n`; `.out` one line of ids per string. */
function readVectors(base: string): { text: string; ids: number[] }[] {
  const texts = readFileSync(join(MODELS, `${base}.inp`), "utf8").split("\n__ggml_vocab_test__\n");
  expect(texts.pop()).toBe(""); // the file ends with the separator
  const lines = readFileSync(join(MODELS, `${base}.out`), "utf8").split("\n");
  expect(lines.pop()).toBe("");
  expect(lines.length).toBe(texts.length);
  return texts.map((text, i) => ({ text, ids: lines[i].split(" ").filter((s) => s !== "").map(Number) }));
}

const VECTOR_CASES = [
  { name: "stories260K", dir: STORIES, vectors: "stories260K/expected/tokenize" },
  { name: "llama2", dir: LLAMA2, vectors: "ggml-vocab/ggml-vocab-llama-spm.gguf" },
  { name: "phi-3-mini", dir: PHI3, vectors: "ggml-vocab/ggml-vocab-phi-3.gguf" },
  { name: "llama3.2-reconstructed", dir: LLAMA32, vectors: "ggml-vocab/ggml-vocab-llama-bpe.gguf" },
];

describe("encode matches llama.cpp's reference vectors", () => {
  for (const { name, dir, vectors } of VECTOR_CASES) {
    it(`${name} vs ${vectors} (46 strings)`, async () => {
      const tokenizer = await load(dir);
      const cases = readVectors(vectors);
      expect(cases.length).toBe(46);
      const mismatches = cases
        .map(({ text, ids }, index) => ({ index, text, expected: ids, got: tokenizer.encode(text) }))
        .filter(({ expected, got }) => JSON.stringify(expected) !== JSON.stringify(got));
      expect(mismatches).toEqual([]);
    });
  }
});

/** Text a user could write: emoji (with ZWJ and skin tones), CJK, code, whitespace runs, control-ish characters. */
const ROUND_TRIP_CORPUS = [
  "Hello world",
  " Hello world",
  "   leading spaces and trailing   ",
  "tabs\tand\t\ttabs\nnew lines\n\n\nand \r\n CRLF",
  "Emoji: 🎉😀🦙 👨‍👩‍👧‍👦 👍🏽 ❤️",
  "日本語のテキスト、中文文本，한국어 텍스트",
  "Ünïcödé naïve café — “quotes” ‘single’ … ½ €",
  "function add(a, b) {\n    return a + b; // sum\n}\n\nconsole.log(add(1, 2));",
  "def f(x):\n\tif x >= 10**3:\n\t\treturn [i for i in range(x)]\n",
  "numbers 1234567890 3.14159 -42 1e10 0x1F",
  "<html><body class=\"x\">&amp; &lt;tag&gt;</body></html>",
  "    \n\n    \t  mixed whitespace runs    ",
  "a",
  "",
  "Apostrophes: don't, it's, we'll, they'VE, I'M",
  "Ελληνικά, русский текст, עברית, العربية, हिन्दी",
];

describe("decode(encode(text)) gives the text back", () => {
  for (const { name, dir, vectors } of VECTOR_CASES) {
    it(`${name}: user-visible text survives a round trip`, async () => {
      const tokenizer = await load(dir);
      const corpus = [...ROUND_TRIP_CORPUS, ...readVectors(vectors).map((c) => c.text)];
      for (const text of corpus) {
        expect(tokenizer.decode(tokenizer.encode(text))).toBe(text);
        // With BOS added: BOS is special, so decode leaves it out (and SentencePiece's "▁" stays invisible).
        expect(tokenizer.decode(tokenizer.encode(text, { addSpecialTokens: true }))).toBe(text);
      }
    });
  }

  it("SentencePiece: the dummy-prefix space is not shown, a real leading space is kept", async () => {
    const tokenizer = await load(LLAMA2);
    expect(tokenizer.encode("Hello")).toEqual([15043]); // "▁Hello"
    expect(tokenizer.decode([15043])).toBe("Hello");
    expect(tokenizer.encode(" Hello")).toEqual([29871, 15043]); // "▁", "▁Hello"
    expect(tokenizer.decode([29871, 15043])).toBe(" Hello");
  });
});

describe("special tokens", () => {
  it("stories260K: BOS <s>=1 is added only when asked; ids and strings from the config files", async () => {
    const tokenizer = await load(STORIES);
    // The prompt ids llama.cpp used for the reference generation (expected/greedy-once-upon-a-time.json).
    expect(tokenizer.encode("Once upon a time", { addSpecialTokens: true })).toEqual([1, 403, 407, 261, 378]);
    expect(tokenizer.encode("Once upon a time")).toEqual([403, 407, 261, 378]);
    expect(tokenizer.encode("Once upon a time", { addSpecialTokens: false })).toEqual([403, 407, 261, 378]);
    expect(tokenizer.bosTokenId).toBe(1);
    expect(tokenizer.bosToken).toBe("<s>");
    expect(tokenizer.eosToken).toBe("</s>");
    expect(tokenizer.eosTokenIds).toEqual([2]);
    expect(tokenizer.addsBosToken).toBe(true);
    expect(tokenizer.vocabSize).toBe(512);
    expect(tokenizer.chatTemplate).toBeUndefined();
    expect(tokenizer.chatTemplates).toEqual({});
  });

  it("stories260K: special tokens written in the text map to their ids", async () => {
    const tokenizer = await load(STORIES);
    const ids = tokenizer.encode("<s>Once</s>");
    expect(ids[0]).toBe(1);
    expect(ids[ids.length - 1]).toBe(2);
    expect(tokenizer.decode(ids)).toBe("Once");
    expect(tokenizer.decode(ids, { skipSpecialTokens: false })).toBe("<s> Once</s>");
  });

  it("llama2: BOS <s>=1 with addSpecialTokens", async () => {
    const tokenizer = await load(LLAMA2);
    expect(tokenizer.encode("Hello world", { addSpecialTokens: true })).toEqual([1, 15043, 3186]);
    expect(tokenizer.bosTokenId).toBe(1);
    expect(tokenizer.eosTokenIds).toEqual([2]);
    expect(tokenizer.vocabSize).toBe(32000);
  });

  it("phi-3-mini: add_bos_token is false, chat tokens are special, chat template is read", async () => {
    const tokenizer = await load(PHI3);
    expect(tokenizer.encode("Hello world", { addSpecialTokens: true })).toEqual(tokenizer.encode("Hello world"));
    expect(tokenizer.addsBosToken).toBe(false);
    expect(tokenizer.bosTokenId).toBe(1);
    expect(tokenizer.eosToken).toBe("<|endoftext|>");
    expect(tokenizer.eosTokenIds).toEqual([32000]);
    expect(tokenizer.vocabSize).toBe(32011);
    expect(tokenizer.encode("<|user|>\nhi<|end|>\n")).toContain(32010);
    expect(tokenizer.encode("<|user|>\nhi<|end|>\n")).toContain(32007);
    expect(tokenizer.chatTemplate).toContain("<|assistant|>");
    expect(tokenizer.chatTemplates.default).toBe(tokenizer.chatTemplate);
  });

  it("llama3.2: <|begin_of_text|> as BOS, <|eot_id|> as EOS, header tokens in text", async () => {
    const tokenizer = await load(LLAMA32);
    expect(tokenizer.encode("Hello world", { addSpecialTokens: true })).toEqual([128000, 9906, 1917]);
    expect(tokenizer.encode("Hello world")).toEqual([9906, 1917]);
    expect(tokenizer.encode("<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>")).toEqual([
      128006, 882, 128007, 271, 6151, 128009,
    ]);
    expect(tokenizer.bosTokenId).toBe(128000);
    expect(tokenizer.bosToken).toBe("<|begin_of_text|>");
    // This directory has no generation_config.json or config.json: only tokenizer_config's eos_token counts.
    expect(tokenizer.eosToken).toBe("<|eot_id|>");
    expect(tokenizer.eosTokenIds).toEqual([128009]);
    expect(tokenizer.vocabSize).toBe(128256);
    expect(tokenizer.chatTemplate).toContain("<|start_header_id|>");
    expect(tokenizer.decode([128000, 9906, 1917, 128009])).toBe("Hello world");
    expect(tokenizer.decode([128000, 9906, 1917, 128009], { skipSpecialTokens: false })).toBe(
      "<|begin_of_text|>Hello world<|eot_id|>",
    );
    expect(tokenizer.isSpecialToken(128009)).toBe(true);
    expect(tokenizer.isSpecialToken(9906)).toBe(false);
    expect(tokenizer.tokenToId("<|eot_id|>")).toBe(128009);
    expect(tokenizer.idToToken(9906)).toBe("Hello");
  });

  it("llama3.2: decoding keeps tokenization spaces as they are (no clean-up)", async () => {
    // tokenizer_config.json says clean_up_tokenization_spaces: true; transformers would turn " ," into ",".
    const tokenizer = await load(LLAMA32);
    const text = "a , b . c ! don 't";
    expect(tokenizer.decode(tokenizer.encode(text))).toBe(text);
  });

  it("decode skips unknown ids and accepts an empty list; rejects non-integers", async () => {
    const tokenizer = await load(STORIES);
    expect(tokenizer.decode([])).toBe("");
    expect(tokenizer.decode([1, 2])).toBe("");
    expect(tokenizer.decode([403, 100000, 407])).toBe("Once upon");
    expect(() => tokenizer.decode([1.5])).toThrow(MlxNodeError);
    expect(() => tokenizer.encode(42 as unknown as string)).toThrow(/Invalid option "text"/);
  });
});

describe("config files in a temporary model directory", () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), "mlx-node-tokenizer-"));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  /** A copy of stories260K's tokenizer files plus the given extra files. */
  async function modelDir(name: string, files: Record<string, unknown>, copy = ["tokenizer.json", "tokenizer_config.json"]): Promise<string> {
    const dir = join(root, name);
    await mkdir(dir);
    for (const file of copy) await copyFile(join(STORIES, file), join(dir, file));
    for (const [file, content] of Object.entries(files)) {
      await writeFile(join(dir, file), typeof content === "string" ? content : JSON.stringify(content));
    }
    return dir;
  }

  it("eosTokenIds is the union of generation_config, config.json and tokenizer_config, in that order", async () => {
    const dir = await modelDir("eos-union", {
      "generation_config.json": { eos_token_id: [5, 7] },
      "config.json": { eos_token_id: 7, bos_token_id: 1 },
    });
    const tokenizer = await Tokenizer.fromDirectory(dir);
    expect(tokenizer.eosTokenIds).toEqual([5, 7, 2]);
    expect(tokenizer.eosToken).toBe("</s>");
  });

  it("without tokenizer_config.json, BOS and EOS come from the model configs", async () => {
    const dir = await modelDir("no-tokenizer-config", { "config.json": { eos_token_id: 2, bos_token_id: 1 } }, ["tokenizer.json"]);
    const tokenizer = await Tokenizer.fromDirectory(dir);
    expect(tokenizer.eosTokenIds).toEqual([2]);
    expect(tokenizer.eosToken).toBe("</s>");
    expect(tokenizer.bosTokenId).toBe(1);
    expect(tokenizer.bosToken).toBe("<s>");
    expect(tokenizer.encode("Once", { addSpecialTokens: true })).toEqual([1, 403]); // tokenizer.json's post-processor
  });

  it("tokenizer_config add_bos_token: false wins over tokenizer.json's post-processor", async () => {
    const config = JSON.parse(readFileSync(join(STORIES, "tokenizer_config.json"), "utf8"));
    const dir = await modelDir("no-bos", { "tokenizer_config.json": { ...config, add_bos_token: false, add_eos_token: true } }, ["tokenizer.json"]);
    const tokenizer = await Tokenizer.fromDirectory(dir);
    expect(tokenizer.encode("Once", { addSpecialTokens: true })).toEqual([403, 2]);
    expect(tokenizer.addsBosToken).toBe(false);
  });

  it("chat_template as a list of named templates: the default one; chat_template.jinja overrides", async () => {
    const config = JSON.parse(readFileSync(join(STORIES, "tokenizer_config.json"), "utf8"));
    const chat_template = [
      { name: "tool_use", template: "TOOLS" },
      { name: "default", template: "DEFAULT" },
    ];
    const listDir = await modelDir("template-list", { "tokenizer_config.json": { ...config, chat_template } }, ["tokenizer.json"]);
    const listed = await Tokenizer.fromDirectory(listDir);
    expect(listed.chatTemplate).toBe("DEFAULT");
    expect(listed.chatTemplates).toEqual({ default: "DEFAULT", tool_use: "TOOLS" });

    const fileDir = await modelDir("template-file", { "tokenizer_config.json": { ...config, chat_template }, "chat_template.jinja": "FROM FILE" }, ["tokenizer.json"]);
    const fromFile = await Tokenizer.fromDirectory(fileDir);
    expect(fromFile.chatTemplate).toBe("FROM FILE");
    expect(fromFile.chatTemplates.tool_use).toBe("TOOLS");
  });

  it("a missing directory is a ModelNotFoundError naming the path", async () => {
    const missing = join(root, "does-not-exist");
    const error = await Tokenizer.fromDirectory(missing).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelNotFoundError);
    expect((error as ModelNotFoundError).code).toBe("MODEL_NOT_FOUND");
    expect((error as ModelNotFoundError).path).toBe(missing);
    expect((error as Error).message).toContain(missing);
  });

  it("a file instead of a directory is a ModelNotFoundError", async () => {
    await expect(Tokenizer.fromDirectory(join(STORIES, "tokenizer.json"))).rejects.toBeInstanceOf(ModelNotFoundError);
  });

  it("a directory without tokenizer.json is a ModelNotFoundError naming the file", async () => {
    const dir = await modelDir("empty", {}, []);
    const error = await Tokenizer.fromDirectory(dir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelNotFoundError);
    expect((error as ModelNotFoundError).path).toBe(join(dir, "tokenizer.json"));
  });

  it("a corrupt tokenizer.json is a TOKENIZER_ERROR naming the file", async () => {
    const dir = await modelDir("corrupt", { "tokenizer.json": '{"version": "1.0", "model": {"type": "BPE", "vocab": {' }, ["tokenizer_config.json"]);
    const error = await Tokenizer.fromDirectory(dir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MlxNodeError);
    expect((error as MlxNodeError).code).toBe("TOKENIZER_ERROR");
    expect((error as Error).message).toContain(join(dir, "tokenizer.json"));
  });

  it("a corrupt tokenizer_config.json is a TOKENIZER_ERROR naming that file", async () => {
    const dir = await modelDir("corrupt-config", { "tokenizer_config.json": "{ not json" }, ["tokenizer.json"]);
    const error = await Tokenizer.fromDirectory(dir).catch((e: unknown) => e);
    expect((error as MlxNodeError).code).toBe("TOKENIZER_ERROR");
    expect((error as Error).message).toContain(join(dir, "tokenizer_config.json"));
  });

  it("valid JSON that is not a tokenizer is a TOKENIZER_ERROR", async () => {
    const notObject = await modelDir("array", { "tokenizer.json": "[]" }, []);
    await expect(Tokenizer.fromDirectory(notObject)).rejects.toMatchObject({ code: "TOKENIZER_ERROR" });
    const noModel = await modelDir("no-model", { "tokenizer.json": { version: "1.0" } }, []);
    await expect(Tokenizer.fromDirectory(noModel)).rejects.toMatchObject({ code: "TOKENIZER_ERROR" });
    const unknownModel = await modelDir("unknown-model", { "tokenizer.json": { model: { type: "Nope" } } }, []);
    await expect(Tokenizer.fromDirectory(unknownModel)).rejects.toMatchObject({ code: "TOKENIZER_ERROR" });
  });
});
