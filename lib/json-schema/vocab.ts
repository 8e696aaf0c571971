/**
 * The bytes each token id stands for, which is what a byte-level automaton must see. Vocabulary
 * entries are not the text: SentencePiece writes a space as "▁" and a raw byte as "<0xNN>"
 * (byte fallback), byte-level BPE (GPT-2, Llama 3, Qwen) maps every byte to a printable
 * character ("Ġ" is a space). Special and control tokens get no bytes: JSON never contains them.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { GgufError, TokenizerError } from "../errors.js";
import type { Tokenizer } from "../tokenizer.js";

/** A vocabulary as constrained decoding sees it. */
export interface TokenVocabulary {
  /** Ids the engine may sample: the model's vocabulary (its logits row), which may exceed the tokenizer's. */
  size: number;
  /** Decoded bytes of each id; undefined for ids that never appear in JSON (special, control, unknown). */
  bytes: (Uint8Array | undefined)[];
  /** Ids that end generation; allowed only where the document is complete. */
  eosIds: number[];
}

/** How vocabulary strings map to bytes. */
export type VocabularyEncoding = "sentencepiece" | "byte-level";

const encoder = new TextEncoder();
const BYTE_TOKEN = /^<0x([0-9A-Fa-f]{2})>$/;
let byteLevelTable: Map<number, number> | undefined;

/** GPT-2's byte ↔ printable-character table (characters to bytes). */
function byteLevelChars(): Map<number, number> {
  if (byteLevelTable) return byteLevelTable;
  const table = new Map<number, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    // Printable Latin-1 bytes stand for themselves; the rest are shifted past U+0100.
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table.set(printable ? b : 256 + extra++, b);
  }
  byteLevelTable = table;
  return table;
}

/** Bytes of one ordinary vocabulary entry. */
export function tokenBytes(token: string, encoding: VocabularyEncoding, byteFallback: boolean): Uint8Array {
  if (encoding === "sentencepiece") {
    const byte = byteFallback ? BYTE_TOKEN.exec(token) : null;
    if (byte) return Uint8Array.of(parseInt(byte[1], 16));
    return encoder.encode(token.replaceAll("\u2581", " "));
  }
  const table = byteLevelChars();
  const out = new Uint8Array(token.length);
  let n = 0;
  for (const c of token) {
    const b = table.get(c.codePointAt(0) as number);
    if (b === undefined) return encoder.encode(token); // not byte-level text: an added token, literal
    out[n++] = b;
  }
  return out.subarray(0, n);
}

/**
 * The vocabulary of a Hugging Face tokenizer (MLX models). Reads the model's `tokenizer.json`
 * once to learn its decoder (the Tokenizer class does not expose it).
 * @throws MlxNodeError `TOKENIZER_ERROR` for tokenizers whose tokens are neither SentencePiece nor byte-level.
 */
export async function vocabularyFromTokenizer(tokenizer: Tokenizer, modelVocabSize: number): Promise<TokenVocabulary> {
  const path = join(tokenizer.directory, "tokenizer.json");
  const json = JSON.parse(await readFile(path, "utf8")) as {
    decoder?: unknown;
    pre_tokenizer?: unknown;
    model?: { byte_fallback?: boolean };
    added_tokens?: { id: number; content: string; special?: boolean }[];
  };
  const types = new Set<string>();
  const collect = (node: unknown): void => {
    if (node === null || typeof node !== "object") return;
    const n = node as { type?: unknown; decoders?: unknown[]; pretokenizers?: unknown[]; pattern?: { String?: string } };
    if (typeof n.type === "string") types.add(n.pattern?.String === "\u2581" ? "ReplaceMetaspace" : n.type);
    for (const child of [...(n.decoders ?? []), ...(n.pretokenizers ?? [])]) collect(child);
  };
  collect(json.decoder);
  collect(json.pre_tokenizer);
  let encoding: VocabularyEncoding;
  if (types.has("ByteLevel")) encoding = "byte-level";
  else if (types.has("Metaspace") || types.has("ReplaceMetaspace") || types.has("ByteFallback")) encoding = "sentencepiece";
  else {
    throw new TokenizerError(`jsonSchema, tool calls and logprobs need a SentencePiece or byte-level BPE tokenizer; ${path} has decoders ${[...types].join(", ") || "none"}`);
  }
  const byteFallback = json.model?.byte_fallback === true || types.has("ByteFallback");
  const added = new Map((json.added_tokens ?? []).map((t) => [t.id, t]));
  const bytes: (Uint8Array | undefined)[] = new Array(modelVocabSize);
  for (let id = 0; id < Math.min(modelVocabSize, tokenizer.vocabSize); id++) {
    if (tokenizer.isSpecialToken(id)) continue;
    const addedToken = added.get(id);
    if (addedToken) {
      if (!addedToken.special) bytes[id] = encoder.encode(addedToken.content);
      continue;
    }
    const token = tokenizer.idToToken(id);
    if (token !== undefined) bytes[id] = tokenBytes(token, encoding, byteFallback);
  }
  return { size: modelVocabSize, bytes, eosIds: tokenizer.eosTokenIds.filter((id) => id < modelVocabSize) };
}

/** GGUF `tokenizer.ggml.token_type` values that are plain text (normal, user-defined) or a raw byte. */
const GGUF_NORMAL = 1;
const GGUF_USER_DEFINED = 4;
const GGUF_BYTE = 6;

/**
 * The vocabulary of a GGUF model from its metadata (`tokenizer.ggml.model`, `.tokens`, `.token_type`).
 * @throws MlxNodeError `GGUF_ERROR` for tokenizer models other than SentencePiece ("llama") and byte-level BPE ("gpt2").
 */
export function vocabularyFromGguf(ggml: { model?: string; tokens?: readonly string[]; token_type?: readonly number[] }, eosIds: number[]): TokenVocabulary {
  const tokens = ggml.tokens ?? [];
  const encoding: VocabularyEncoding | undefined = ggml.model === "llama" ? "sentencepiece" : ggml.model === "gpt2" ? "byte-level" : undefined;
  if (!encoding) throw new GgufError(`jsonSchema, tool calls and logprobs need a SentencePiece or byte-level BPE tokenizer; this GGUF has "${ggml.model}"`);
  const bytes: (Uint8Array | undefined)[] = new Array(tokens.length);
  tokens.forEach((token, id) => {
    const type = ggml.token_type?.[id] ?? GGUF_NORMAL;
    if (type === GGUF_BYTE) bytes[id] = tokenBytes(token, "sentencepiece", true);
    else if (type === GGUF_USER_DEFINED) bytes[id] = encoder.encode(token);
    else if (type === GGUF_NORMAL) bytes[id] = tokenBytes(token, encoding, false);
  });
  return { size: tokens.length, bytes, eosIds };
}
