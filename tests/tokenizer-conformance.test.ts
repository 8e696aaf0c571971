/**
 * Our Tokenizer against transformers' fast tokenizer (`AutoTokenizer`) on a seeded corpus of over
 * 2,000 strings per tokenizer (tests/python/tokenizer_reference.py): code, whitespace runs, scripts,
 * combining marks, emoji with ZWJ, numbers, and the tokenizer's own special tokens written in text.
 *
 * transformers 5 rebuilds the pre-tokenizer of some classes in code instead of reading tokenizer.json
 * (LlamaTokenizer: Metaspace with prepend "first" replaces the SentencePiece "Prepend ▁" normalizer),
 * which changes the ids of strings that start with whitespace. Where transformers' ids differ from the
 * model's own tokenizer.json run by the Rust `tokenizers` library, we follow tokenizer.json: that is
 * what SentencePiece and llama.cpp (the GGUF backend) produce, and the test says how many strings that is.
 */
import { fileURLToPath } from "node:url";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import { beforeAll, describe, expect, it } from "vitest";
import { Tokenizer } from "../lib/tokenizer.js";
import { pythonModules } from "./support/python.js";
import { realModels } from "./support/real-models.js";
import { cachedReference, hashFiles } from "./support/reference-cache.js";

const MODELS = fileURLToPath(new URL("../../shared/models/", import.meta.url));

const python = pythonModules(["transformers", "tokenizers"]);
const real = realModels();

/** The tokenizers judged: every shared tokenizer directory with a tokenizer.json, and the real models'. */
const TOKENIZERS: { name: string; dir: string }[] = [
  ...real.models.map((m) => ({ name: m.name, dir: m.hf })),
  { name: "stories260K", dir: `${MODELS}stories260K/hf-f32` },
  { name: "llama2", dir: `${MODELS}tokenizers/llama2` },
  { name: "phi-3-mini", dir: `${MODELS}tokenizers/phi-3-mini` },
  { name: "llama3.2-reconstructed", dir: `${MODELS}tokenizers/llama3.2-reconstructed` },
];

const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json", "generation_config.json"];

interface ReferenceCase {
  text: string;
  ids: number[];
  idsSpecial: number[];
  decoded: string;
  decodedSkip: string;
  tokenizerJsonIds?: number[];
  tokenizerJsonIdsSpecial?: number[];
}
interface ReferenceTokenizer {
  name: string;
  class: string;
  repairedMerges: number;
  specialTokens: string[];
  cases: ReferenceCase[];
}
interface Reference {
  versions: Record<string, string>;
  tokenizers: ReferenceTokenizer[];
}

/** The first few differences, compactly, for a failure message. */
function firstDiffs(diffs: { text: string; expected: unknown; got: unknown }[], count = 4): string {
  return diffs
    .slice(0, count)
    .map((d) => `  ${JSON.stringify(d.text.slice(0, 60))}\n    expected ${JSON.stringify(d.expected)}\n    got      ${JSON.stringify(d.got)}`)
    .join("\n");
}

let reference: Reference | undefined;
/** transformers' reference for every tokenizer (made once, then read from the test cache), shared by both suites. */
function tokenizerReference(): Reference {
  if (!reference) {
    const keys = [JSON.stringify(python.versions), ...TOKENIZERS.map((t) => hashFiles(t.dir, TOKENIZER_FILES))];
    reference = cachedReference<Reference>("tokenizer-reference", "tokenizer_reference.py", TOKENIZERS, keys);
  }
  return reference;
}

describe("tokenizer ids (transformers)", () => {
  beforeAll(() => {
    if (python.available) tokenizerReference();
  }, 300_000);

  for (const { name, dir } of TOKENIZERS) {
    it.skipIf(!python.available)(`${name}: ids, ids with special tokens, decode and round trip equal transformers'`, async () => {
      const ref = reference!.tokenizers.find((t) => t.name === name)!;
      const tokenizer = await Tokenizer.fromDirectory(dir);
      expect(ref.cases.length).toBeGreaterThanOrEqual(2000);
      type Diff = { text: string; expected: unknown; got: unknown };
      const idDiffs: Diff[] = [];
      const specialDiffs: Diff[] = [];
      const decodeDiffs: Diff[] = [];
      const roundTripDiffs: Diff[] = [];
      let followedTokenizerJson = 0;
      for (const c of ref.cases) {
        const expected = c.tokenizerJsonIds ?? c.ids;
        if (c.tokenizerJsonIds) followedTokenizerJson++;
        const ids = tokenizer.encode(c.text);
        if (JSON.stringify(ids) !== JSON.stringify(expected)) idDiffs.push({ text: c.text, expected, got: ids });
        const expectedSpecial = c.tokenizerJsonIdsSpecial ?? c.idsSpecial;
        const special = tokenizer.encode(c.text, { addSpecialTokens: true });
        if (JSON.stringify(special) !== JSON.stringify(expectedSpecial)) specialDiffs.push({ text: c.text, expected: expectedSpecial, got: special });
        // Decode the reference's own ids, so a decode difference is not an encode difference in disguise.
        const decoded = tokenizer.decode(c.ids, { skipSpecialTokens: false });
        if (decoded !== c.decoded) decodeDiffs.push({ text: c.text, expected: c.decoded, got: decoded });
        const skipped = tokenizer.decode(c.ids);
        if (skipped !== c.decodedSkip) decodeDiffs.push({ text: c.text, expected: c.decodedSkip, got: skipped });
        // Where transformers gets the text back from the same ids, so must we (from our own ids).
        if (c.decoded === c.text && !c.tokenizerJsonIds) {
          const back = tokenizer.decode(ids, { skipSpecialTokens: false });
          if (back !== c.text) roundTripDiffs.push({ text: c.text, expected: c.text, got: back });
        }
      }
      console.log(
        `[tokenizer ids (transformers)] ${name} (${ref.class}${ref.repairedMerges ? `, ${ref.repairedMerges} unparsable merges dropped for transformers` : ""}): ` +
          `${ref.cases.length} strings; ids differ ${idDiffs.length}, with special tokens ${specialDiffs.length}, decode ${decodeDiffs.length}, round trip ${roundTripDiffs.length}; ` +
          `${followedTokenizerJson} strings where transformers' rebuilt pipeline departs from tokenizer.json`,
      );
      const report = [
        idDiffs.length ? `ids (${idDiffs.length}):\n${firstDiffs(idDiffs)}` : "",
        specialDiffs.length ? `ids with special tokens (${specialDiffs.length}):\n${firstDiffs(specialDiffs)}` : "",
        decodeDiffs.length ? `decode (${decodeDiffs.length}):\n${firstDiffs(decodeDiffs)}` : "",
        roundTripDiffs.length ? `round trip (${roundTripDiffs.length}):\n${firstDiffs(roundTripDiffs)}` : "",
      ].filter(Boolean);
      expect(report.join("\n"), `${name} differs from transformers`).toBe("");
    });
  }
});

/**
 * The real models' HF tokenizers (what the MLX backend runs) against llama.cpp on the GGUF they were
 * converted from (what the GGUF backend runs), on the same corpus: one model, one tokenization,
 * whichever backend serves it. Special tokens written in the text are parsed on both sides.
 */
describe("tokenizer ids (llama.cpp)", () => {
  let corpus: Map<string, string[]> | undefined;
  beforeAll(() => {
    if (!python.available || !real.available) return;
    corpus = new Map(tokenizerReference().tokenizers.map((t) => [t.name, t.cases.map((c) => c.text)]));
  }, 300_000);

  for (const model of real.models) {
    it.skipIf(!python.available)(`${model.name}: the HF tokenizer's ids equal llama.cpp's on the GGUF`, async () => {
      const texts = corpus!.get(model.name)!;
      const llama = await getLlama({ gpu: false, build: "never", skipDownload: true, progressLogs: false, logLevel: LlamaLogLevel.error });
      const gguf = await llama.loadModel({ modelPath: model.gguf, vocabOnly: true });
      try {
        const tokenizer = await Tokenizer.fromDirectory(model.hf);
        const diffs: { text: string; expected: unknown; got: unknown }[] = [];
        for (const text of texts) {
          const expected = Array.from(gguf.tokenize(text, true));
          const got = tokenizer.encode(text);
          if (JSON.stringify(got) !== JSON.stringify(expected)) diffs.push({ text, expected, got });
        }
        console.log(`[tokenizer ids (llama.cpp)] ${model.name}: ${texts.length} strings; ids differ ${diffs.length}`);
        expect(texts.length).toBeGreaterThanOrEqual(2000);
        expect(diffs.length ? firstDiffs(diffs) : "", `${model.name} differs from llama.cpp in ${diffs.length} strings`).toBe("");
      } finally {
        await gguf.dispose();
      }
    });
  }
});
