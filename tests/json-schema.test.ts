/**
 * Guaranteed JSON (`jsonSchema`): the byte automaton and its token-level constraint on their own,
 * then the main property on both engines: 50 seeded samples at temperature 1 from tiny random
 * models, which write gibberish without the constraint, all parse and validate with it, also
 * when maxTokens is as small as the schema allows.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GgufBackend } from "../lib/backends/gguf.js";
import { MlxBackend } from "../lib/backends/mlx.js";
import type { BaseBackend } from "../lib/backends/base.js";
import { InvalidOptionError } from "../lib/errors.js";
import { parseAndValidate, type JsonSchema } from "../lib/json-schema/validate.js";
import { JsonAutomaton, REJECT } from "../lib/json-schema/automaton.js";
import { compileJsonSchema, minimumMaxTokens } from "../lib/json-schema/schema.js";
import { TokenConstraint } from "../lib/json-schema/token-constraint.js";
import { vocabularyFromTokenizer, type TokenVocabulary } from "../lib/json-schema/vocab.js";
import type { NativeDone, NativeModel } from "../lib/native.js";
import { Tokenizer } from "../lib/tokenizer.js";
import { makeRng, writeTinyModel } from "./reference/tiny-models.js";
import { mlxAvailable } from "./support/mlx.js";

const PERSON: JsonSchema = {
  type: "object",
  properties: {
    name: { type: "string" },
    age: { type: "integer" },
    tags: { type: "array", items: { type: "string", enum: ["red", "green", "blue"] } },
    address: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
  required: ["name", "age"],
};
const SHORTEST_PERSON = '{"name":"","age":0}';
const automaton = (schema: JsonSchema) => new JsonAutomaton(compileJsonSchema(schema));
const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

describe("JSON schema automaton", () => {
  const person = automaton(PERSON);

  it("accepts valid documents, with the optional spaces, and only complete ones", () => {
    for (const doc of [
      SHORTEST_PERSON,
      ' {"name": "Ada", "age": 36}',
      '{"name":"x","age":-7,"tags":["red","blue"],"address":{"city":"Oslo"}}',
      '{"name":"x","age":1,"address":{"city":""}}',
      '{"name":"x","age":1,"tags":[]}',
    ]) {
      expect(person.accepts(doc), doc).toBe(true);
      expect(parseAndValidate(doc, PERSON).ok).toBe(true);
    }
    for (const prefix of ['{"na', '{"name":"Ad', '{"name":"x","age":-', '{"name":"x","age":1,"tags":["gr']) {
      expect(person.acceptsPrefix(prefix), prefix).toBe(true);
      expect(person.accepts(prefix), prefix).toBe(false);
    }
  });

  it("rejects invalid prefixes", () => {
    for (const bad of [
      "x", "[", '{"name":"x"}', '{"age":1,"name":"x"}', '{"nome"', '{"name":"x","age":1,}', '{"name":1',
      '{"name":"x","age":1.5', '{"name":"x","age":01', '{"name":"x","age":1,"tags":["pink"', '{"name":"x","age":1,"address":{}',
      '{\n"name"', '{ "name"', '{"name":"x",  "age"', '{"name":"x","age":1}}', '{"name":"x","age":1} ', '{"name":"x","age":1,"extra":1',
    ]) {
      expect(person.acceptsPrefix(bad), bad).toBe(false);
    }
  });

  it("knows the shortest completion from each state", () => {
    expect(person.cost(person.initial)).toBe(SHORTEST_PERSON.length);
    expect(minimumMaxTokens(PERSON)).toBe(SHORTEST_PERSON.length);
    const completion = (prefix: string) => {
      const state = person.advance(person.initial, new TextEncoder().encode(prefix));
      const rest = text(person.shortestCompletion(state));
      expect(rest.length).toBe(person.cost(state));
      expect(person.accepts(prefix + rest)).toBe(true);
      return rest;
    };
    expect(completion("")).toBe(SHORTEST_PERSON);
    expect(completion('{"name":"ab')).toBe('","age":0}');
    expect(completion('{"name":"a\\u0')).toBe('000","age":0}');
    expect(completion('{"name":"x","age":-')).toBe("0}");
    expect(completion('{"name":"x","age":12')).toBe("}");
    expect(completion('{"name":"x","age":1,"tags":["')).toBe('red"]}');
    expect(completion('{"name":"x","age":1,"tags":["red",')).toBe('"red"]}');
    expect(completion('{"name":"x","age":1,"ad')).toBe('dress":{"city":""}}');
    expect(completion('{"name":"x","age":1,"address":{"city":"y"')).toBe("}}");
  });

  it("handles nesting, enums, booleans and optional properties before required ones", () => {
    const schema: JsonSchema = {
      type: "array",
      items: {
        type: "object",
        properties: { note: { type: "string" }, ok: { type: "boolean" }, level: { enum: [1, 12, "high", null] } },
        required: ["level"],
      },
    };
    const a = automaton(schema);
    expect(a.cost(a.initial)).toBe(2);
    for (const doc of ["[]", '[{"level":1}]', '[{"level":12},{"note":"n","ok":false,"level":null}]', '[{"ok":true, "level":"high"}]']) {
      expect(a.accepts(doc), doc).toBe(true);
    }
    for (const bad of ['[{"ok":true}]', '[{"level":2}]', '[{"level":"low"}]', '[{"level":1,"ok":true}]', "[1]"]) {
      expect(a.accepts(bad), bad).toBe(false);
    }
    // "1" may be complete or the start of "12": the automaton waits for the next byte.
    const state = a.advance(a.initial, new TextEncoder().encode('[{"level":1'));
    expect(a.cost(state)).toBe(2);
    expect(a.next(state, "2".charCodeAt(0))).not.toBe(REJECT);
  });

  it("checks string escapes and UTF-8", () => {
    const s = automaton({ type: "string" });
    for (const ok of ['"a\\"b"', '"\\\\"', '"\\u00e9\\n\\t\\/"', '"é ü 日本 😀"', '"\u007f"']) expect(s.accepts(ok), ok).toBe(true);
    for (const bad of ['"\\x"', '"\\u12G4"', '"a\nb"', '"\t"']) expect(s.acceptsPrefix(bad), bad).toBe(false);
    const bytes = (...b: number[]) => s.advance(s.initial, [0x22, ...b]);
    expect(bytes(0x80)).toBe(REJECT); // stray continuation byte
    expect(bytes(0xc0, 0x80)).toBe(REJECT); // overlong
    expect(bytes(0xed, 0xa0)).toBe(REJECT); // surrogate
    expect(bytes(0xf5)).toBe(REJECT); // past U+10FFFF
    expect(s.cost(bytes(0xe6))).toBe(3); // two continuation bytes and the quote
    expect(s.acceptsPrefix('"\\uD83D')).toBe(false); // escaped surrogates are never written
  });

  it("accepts JSON numbers and tells integers from numbers", () => {
    const n = automaton({ type: "number" });
    const i = automaton({ type: "integer" });
    for (const ok of ["0", "-0", "-12", "3.25", "-0.5", "1e5", "1E+2", "2.5e-3", "123456789012345"]) expect(n.accepts(ok), ok).toBe(true);
    for (const bad of ["01", ".5", "+1", "1.e5", "--1", "1e123", "1234567890123456", "NaN"]) expect(n.accepts(bad), bad).toBe(false);
    for (const incomplete of ["-", "1.", "1e", "1e-"]) {
      expect(n.acceptsPrefix(incomplete), incomplete).toBe(true);
      expect(n.accepts(incomplete), incomplete).toBe(false);
    }
    for (const ok of ["0", "-7", "42"]) expect(i.accepts(ok), ok).toBe(true);
    for (const bad of ["1.5", "1e5", "1.0"]) expect(i.acceptsPrefix(bad), bad).toBe(false);
    expect(n.finished(n.advance(n.initial, [0x31]))).toBe(false); // "1" may go on
  });

  it("random walks under a budget always end in a document that parses and validates", () => {
    const schemas: JsonSchema[] = [
      PERSON,
      { type: "number" },
      { type: "array", items: { type: "array", items: { type: "integer" } } },
      { enum: ["a", 1, 1.5, true, null] },
      { type: "object", properties: { a: { type: "object", properties: { b: { type: "boolean" } } }, c: { type: "string" } }, required: ["c"] },
    ];
    const rng = makeRng(7);
    for (const schema of schemas) {
      const a = automaton(schema);
      for (let walk = 0; walk < 150; walk++) {
        let state = a.initial;
        const out: number[] = [];
        const budget = a.cost(state) + Math.floor(rng.uniform() * 40);
        for (let left = budget; left > 0; left--) {
          const choices: number[] = [];
          for (let b = 0; b < 256; b++) {
            const next = a.next(state, b);
            if (next !== REJECT && a.cost(next) <= left - 1) choices.push(b);
          }
          if (choices.length === 0 || (a.cost(state) === 0 && rng.uniform() < 0.1)) break;
          const b = choices[Math.floor(rng.uniform() * choices.length)];
          out.push(b);
          state = a.next(state, b);
        }
        const doc = text(Uint8Array.from(out));
        expect(a.cost(state), doc).toBe(0);
        expect(parseAndValidate(doc, schema), doc).toMatchObject({ ok: true });
      }
    }
  });
});

describe("jsonSchema option", () => {
  const mlxLike = new MlxBackend();
  const reject = (options: object, pattern: RegExp) => {
    let error: unknown;
    try {
      mlxLike.generateStream("x", options);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(InvalidOptionError);
    expect((error as Error).message).toMatch(pattern);
  };

  it("rejects what it cannot enforce before any work, naming the keyword and where", () => {
    reject({ jsonSchema: { type: "object", properties: { a: { not: { type: "string" } } } } }, /#\/properties\/a: unsupported keyword "not"/);
    reject({ jsonSchema: { type: "array", items: { type: "integer" }, uniqueItems: true } }, /#: unsupported keyword "uniqueItems"/);
    reject({ jsonSchema: { oneOf: [{ type: "string" }, { type: "string", maxLength: 3 }] } }, /#\/oneOf: alternatives 0 and 1 can match the same document/);
    reject({ jsonSchema: { type: "string", pattern: "^(?=a)b" } }, /#\/pattern: "\^\(\?=a\)b": lookahead/);
    reject({ jsonSchema: { type: "string", format: "credit-card" } }, /#\/format: unsupported format "credit-card"/);
    reject({ jsonSchema: { type: "object", properties: {}, required: ["x"], additionalProperties: false } }, /"x" is not in "properties"/);
    reject({ jsonSchema: { type: "integer", enum: ["a"] } }, /#\/enum: no value satisfies/);
    reject({ jsonSchema: { $ref: "https://example.com/s.json" } }, /#\/\$ref: only references inside the schema/);
    reject({ jsonSchema: { type: "integer", minimum: 5, maximum: 4 } }, /#: no integer satisfies its bounds/);
    reject({ jsonSchema: { enum: Array.from({ length: 5000 }, (_, i) => `v${i}`) } }, /more than 4096 enum\/const values/);
    reject({ jsonSchema: PERSON, maxTokens: SHORTEST_PERSON.length - 1 }, /"maxTokens": expected at least 19/);
    reject({ jsonSchema: PERSON, stop: "}" }, /"stop"/);
    reject({ jsonSchema: PERSON, ignoreEos: true }, /"ignoreEos"/);
  });
});

describe("token constraint", () => {
  // Every single byte, a few merged tokens (crossing JSON structure, as real vocabularies do), an EOS.
  const merged = ['{"', "name", '":', '","', 'age":', '"}', " {", "ab", "é"];
  const bytes: Uint8Array[] = [];
  for (let b = 0; b < 256; b++) bytes.push(Uint8Array.of(b));
  for (const m of merged) bytes.push(new TextEncoder().encode(m));
  const EOS = bytes.length;
  const vocab: TokenVocabulary = { size: EOS + 1, bytes: [...bytes, undefined], eosIds: [EOS] };
  const id = (t: string) => bytes.findIndex((b) => text(b) === t && b.length === new TextEncoder().encode(t).length);
  const allowed = (mask: Uint32Array) => [...Array(vocab.size).keys()].filter((i) => (mask[i >>> 5] >>> (i & 31)) & 1);
  const c = new TokenConstraint(compileJsonSchema(PERSON), vocab);
  const walk = (tokens: string[]) => tokens.reduce((s, t) => c.advance(s, id(t)), c.initial);

  it("allows exactly the tokens that keep a valid prefix", () => {
    const first = allowed(c.mask(c.initial, 100)).map((i) => text(bytes[i] ?? new Uint8Array()));
    expect(first.sort()).toEqual([" ", " {", "{", '{"']);
    const inName = walk(['{"', "name", '":', '"', "ab"]);
    const mask = c.mask(inName, 100);
    expect(allowed(mask)).toContain(id('","'));
    expect(allowed(mask)).toContain(id("é"));
    expect(allowed(mask)).not.toContain(id("\n"));
    expect(allowed(mask)).not.toContain(EOS);
    expect(c.advance(inName, id('","'))).not.toBe(REJECT);
  });

  it("forces the document closed when the budget gets tight", () => {
    const inName = walk(['{"', "name", '":', '"', "ab"]);
    expect(c.automaton.cost(inName)).toBe('","age":0}'.length);
    // Exactly enough room: every token must shorten the completion.
    const tight = allowed(c.mask(inName, c.automaton.cost(inName) - 1));
    expect(tight).toContain(id('"'));
    expect(tight).toContain(id('","'));
    expect(tight).not.toContain(id("a"));
    expect(c.fits(inName, 100)).toBe(true);
    expect(c.fits(inName, 9)).toBe(false);
    expect(c.completionTokens(inName).map((t) => text(bytes[t]))).toEqual(['","', 'age":', "0", "}"]);
  });

  it("allows EOS only where the document may end, and ends at once when nothing may follow", () => {
    const n = new TokenConstraint(compileJsonSchema({ type: "integer" }), vocab);
    const twelve = n.advance(n.advance(n.initial, id("1")), id("2"));
    expect(allowed(n.mask(twelve, 10))).toContain(EOS);
    expect(allowed(n.mask(n.initial, 10))).not.toContain(EOS);
    const done = walk(['{"', "name", '":', '"', '","', 'age":', "0", "}"]);
    expect(c.finished(done)).toBe(true);
  });
});

describe("token bytes of real vocabularies", () => {
  // SentencePiece with byte fallback ("▁", "<0x0A>") and byte-level BPE ("Ġ", 128k tokens).
  for (const name of ["llama2", "llama3.2-reconstructed"]) {
    it(`${name}: match the tokenizer's decode, and a real tokenization of a valid document is accepted`, async () => {
      const tokenizer = await Tokenizer.fromDirectory(new URL(`../../shared/models/tokenizers/${name}/`, import.meta.url).pathname);
      const vocab = await vocabularyFromTokenizer(tokenizer, tokenizer.vocabSize);
      const anchor = tokenizer.encode("a")[0];
      let checked = 0;
      for (let id = 0; id < tokenizer.vocabSize; id += 97) {
        const b = vocab.bytes[id];
        if (!b) continue;
        let expected: string;
        try {
          expected = new TextDecoder("utf-8", { fatal: true }).decode(b);
        } catch {
          continue; // a partial UTF-8 character decodes to U+FFFD on its own
        }
        // Decoded after another token, so SentencePiece keeps the token's leading space.
        expect(tokenizer.decode([anchor, id]).slice(tokenizer.decode([anchor]).length), `${id} ${tokenizer.idToToken(id)}`).toBe(expected);
        checked++;
      }
      expect(checked).toBeGreaterThan(200);
      const c = new TokenConstraint(compileJsonSchema(PERSON), vocab);
      let state = c.initial;
      for (const id of tokenizer.encode('{"name": "Ada Lovelace", "age": 36, "tags": ["red", "blue"], "address": {"city": "Zürich"}}')) {
        expect((c.mask(state, 1000)[id >>> 5] >>> (id & 31)) & 1).toBe(1);
        state = c.advance(state, id);
      }
      expect(c.finished(state)).toBe(true);
    });
  }
});

const SAMPLES = 50;
const PROMPT = "Reply in JSON.";
/** From the schema's exact minimum up: small budgets exercise the forced closing. */
const maxTokensFor = (i: number) => SHORTEST_PERSON.length + (i % 25);

/** 50 seeded samples at temperature 1; how many parse and validate against PERSON. */
async function sample(backend: BaseBackend, constrained: boolean): Promise<{ valid: number; invalid: string[] }> {
  const invalid: string[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    const maxTokens = maxTokensFor(i);
    const r = await backend.generate(PROMPT, { temperature: 1, seed: 1000 + i, maxTokens, ...(constrained ? { jsonSchema: PERSON } : {}) });
    expect(r.tokens.length).toBeLessThanOrEqual(maxTokens);
    if (!parseAndValidate(r.text, PERSON).ok) invalid.push(r.text);
  }
  return { valid: SAMPLES - invalid.length, invalid };
}

async function guaranteedJson(name: string, backend: BaseBackend): Promise<void> {
  const json = await sample(backend, true);
  const free = await sample(backend, false);
  console.log(`[${name}] with jsonSchema: ${json.valid}/${SAMPLES} parse and validate; without: ${free.valid}/${SAMPLES} (e.g. ${JSON.stringify(free.invalid[0]?.slice(0, 60))})`);
  expect(json.invalid).toEqual([]);
  expect(free.valid).toBeLessThan(5);
}

/** "stop" when the model completes the document, "length" when the budget forces it closed. */
async function finishReasons(backend: BaseBackend): Promise<void> {
  const flag: JsonSchema = { type: "object", properties: { ok: { type: "boolean" } }, required: ["ok"] };
  const free = await backend.generate(PROMPT, { jsonSchema: flag, temperature: 1, seed: 1, maxTokens: 40 });
  expect(free).toMatchObject({ finishReason: "stop" });
  expect(parseAndValidate(free.text, flag).ok).toBe(true);
  const tight = await backend.generate(PROMPT, { jsonSchema: PERSON, temperature: 1, seed: 1, maxTokens: SHORTEST_PERSON.length });
  expect(tight.finishReason).toBe("length");
  expect(parseAndValidate(tight.text, PERSON).ok).toBe(true);
}

describe.skipIf(!mlxAvailable)("MLX: guaranteed JSON from a tiny random model", () => {
  const root = mkdtempSync(join(tmpdir(), "mlx-node-json-"));
  const mlx = new MlxBackend();
  const native = () => (mlx as unknown as { model: NativeModel }).model;
  beforeAll(async () => {
    writeTinyModel(join(root, "tiny"), { family: "llama", dtype: "float32", seed: 3 });
    await mlx.load(join(root, "tiny"));
  });
  afterAll(async () => {
    await mlx.unload();
    rmSync(root, { recursive: true, force: true });
  });

  it("50 of 50 samples at temperature 1 parse and validate; without the constraint almost none do", async () => {
    await guaranteedJson("mlx", mlx);
  });

  it("finishes with stop when the document is complete, length when the budget closed it", () => finishReasons(mlx));

  it("chat() passes jsonSchema through", async () => {
    const r = await mlx.chat([{ role: "user", content: "Who?" }], { jsonSchema: PERSON, temperature: 1, seed: 5, maxTokens: 30, chatTemplate: "{% for m in messages %}{{ m.content }}\n{% endfor %}" });
    expect(parseAndValidate(r.text, PERSON).ok).toBe(true);
  });

  /** Runs the native engine directly; `drive` gets the handle and each token batch. */
  const runNative = (maxTokens: number, drive: (h: ReturnType<NativeModel["generate"]>, tokens: number[] | null) => void) =>
    new Promise<{ tokens: number[]; done: NativeDone }>((resolve) => {
      const tokens: number[] = [];
      const params = { maxTokens, temperature: 1, topP: 1, topK: 0, minP: 0, repetitionPenalty: 1, repetitionContextSize: 64, seed: 1, stopTokenIds: new Int32Array(), constrained: true };
      const h = native().generate(Int32Array.from([1, 403, 407]), params, (batch, done) => {
        if (batch) {
          tokens.push(...batch);
          drive(h, tokens);
        } else resolve({ tokens, done: done as NativeDone });
      });
      drive(h, null);
    });
  const only = (token: number) => {
    const mask = new Uint32Array(Math.ceil(512 / 32));
    mask[token >>> 5] = 1 << (token & 31);
    return mask;
  };

  it("native hook: each token is sampled among its mask; null ends; cancel wakes a waiting engine", async () => {
    const pinned = await runNative(6, (h, tokens) => h.provideMask(tokens?.length ?? 0, only(300 + (tokens?.length ?? 0))));
    expect(pinned.tokens).toEqual([300, 301, 302, 303, 304, 305]);
    expect(pinned.done.stats?.finish).toBe("length");

    const ended = await runNative(6, (h, tokens) => h.provideMask(tokens?.length ?? 0, tokens?.length === 2 ? null : only(7)));
    expect(ended.tokens).toEqual([7, 7]);
    expect(ended.done.stats?.finish).toBe("stop");

    // No mask ever comes: the engine waits until cancel, then ends cleanly.
    let handle: ReturnType<NativeModel["generate"]> | undefined;
    const waiting = runNative(6, (h) => (handle = h));
    await new Promise((r) => setTimeout(r, 100));
    handle?.cancel();
    const cancelled = await waiting;
    expect(cancelled.tokens).toEqual([]);
    expect(cancelled.done.stats?.finish).toBe("cancelled");
  });

  it("native hook: malformed or out-of-order masks are refused", async () => {
    await runNative(2, (h, tokens) => {
      if (tokens) return;
      expect(() => h.provideMask(0, new Uint32Array(3))).toThrow(RangeError);
      expect(() => h.provideMask(0, new Uint8Array(64) as unknown as Uint32Array)).toThrow(TypeError);
      h.provideMask(0, only(9));
      h.provideMask(2, only(9)); // step 1 skipped
    }).then(({ tokens, done }) => {
      expect(tokens).toEqual([9]);
      expect(done.error?.code).toBe("INVALID_OPTION");
    });
  });

  it("unload during a constrained generation ends it with UnloadedError, without deadlock", async () => {
    const stream = mlx.generateStream(PROMPT, { jsonSchema: PERSON, temperature: 1, seed: 3, maxTokens: 1000 });
    let unloading: Promise<void> | undefined;
    const consume = (async () => {
      let chunks = 0;
      for await (const _ of stream) if (++chunks === 2) unloading = mlx.unload();
    })();
    await expect(consume).rejects.toMatchObject({ code: "UNLOADED" });
    await unloading;
    await mlx.load(join(root, "tiny"));
  });
});

describe("GGUF: guaranteed JSON from llama-2-tiny-random (32k vocab, random weights)", () => {
  const gguf = new GgufBackend();
  beforeAll(async () => {
    await gguf.load(new URL("../../shared/models/llama-2-tiny-random/llama-2-tiny-random.gguf", import.meta.url).pathname, { threads: 1 });
  });
  afterAll(() => gguf.unload());

  it("50 of 50 samples at temperature 1 parse and validate; without the constraint almost none do", async () => {
    await guaranteedJson("gguf", gguf);
  });

  it("finishes with stop when the document is complete, length when the budget closed it", () => finishReasons(gguf));

  it("numbers, nested arrays, enums and optional properties through the token bias", async () => {
    const schemas: JsonSchema[] = [
      { type: "array", items: { type: "number" } },
      { type: "object", properties: { a: { type: "array", items: { type: "array", items: { type: "integer" } } }, b: { enum: [1, 12, "x", null, false] } }, required: ["b"] },
      { type: "object", properties: { o: { type: "boolean" }, p: { type: "string" }, q: { type: "number" } } },
    ];
    for (const schema of schemas) {
      for (let seed = 0; seed < 8; seed++) {
        const r = await gguf.generate(PROMPT, { jsonSchema: schema, temperature: 1, seed, maxTokens: 16 + seed * 3 });
        expect(parseAndValidate(r.text, schema), r.text).toMatchObject({ ok: true });
      }
    }
  });
});
