/**
 * The tokenizer of a synthetic model: a real HF tokenizer.json from shared/models, fitted to the
 * model's vocab size, plus the same vocabulary in llama.cpp's GGUF form.
 *
 * Only the Llama 3.2 (byte-level BPE, 128,256 ids) and Llama 2 (SentencePiece BPE, 32,000 ids)
 * tokenizers are available locally, so other models get a substitute:
 * - tokenizer smaller than the model's vocab (Qwen2.5: 151,936 rows): tokenizer.json is kept as is
 *   (real Qwen2.5 also has fewer tokenizer ids than embedding rows) and the GGUF token list is
 *   padded with `[PAD<id>]` UNUSED tokens, as convert_hf_to_gguf does;
 * - tokenizer larger than the vocab (SmolLM2: 49,152 rows): a byte-level BPE is cut down to its
 *   first ids (merge results always have higher ids than their parts, and all 256 byte symbols
 *   come first, so every text still encodes), merges touching a dropped id are removed and the
 *   special tokens move to the top ids. Both formats get the same cut tokenizer.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

type Json = Record<string, unknown>;

/** llama.cpp token types (llama_token_type / gguf TokenType). */
export const TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

export interface GgufVocab {
  /** `tokenizer.ggml.model`: "gpt2" (byte-level BPE) or "llama" (SentencePiece). */
  model: "gpt2" | "llama";
  /** `tokenizer.ggml.pre` (gpt2 only). */
  pre?: string;
  tokens: string[];
  types: Int32Array;
  /** SentencePiece merge priorities (llama only). */
  scores?: Float32Array;
  /** "left right" pairs in rank order (gpt2 only). */
  merges?: string[];
  bos?: number;
  eos?: number;
  unk?: number;
  addBos: boolean;
  chatTemplate?: string;
}

export interface Vocab {
  /** Files for an MLX directory: written from `content`, or copied byte for byte from `copyFrom`. */
  files: { name: string; content?: string; copyFrom?: string }[];
  gguf: GgufVocab;
  bosId: number | undefined;
  eosId: number | undefined;
  /** One line saying which tokenizer was used and how it was fitted. */
  description: string;
}

const NAMED: Record<string, { dir: string; label: string }> = {
  llama3: { dir: "tokenizers/llama3.2-reconstructed", label: "Llama 3.2 byte-level BPE" },
  llama2: { dir: "tokenizers/llama2", label: "Llama 2 SentencePiece BPE" },
};

/** shared/models: $MLX_NODE_SHARED_MODELS, else next to the repository (works from src and dist). */
export function sharedModelsDir(): string {
  if (process.env.MLX_NODE_SHARED_MODELS) return process.env.MLX_NODE_SHARED_MODELS;
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json")) && dirname(dir) !== dir) dir = dirname(dir);
  return resolve(dir, "../shared/models");
}

/** `llama3`, `llama2` or a directory holding tokenizer.json. */
export function tokenizerDir(nameOrDir: string): { dir: string; label: string } {
  const named = NAMED[nameOrDir];
  if (named) return { dir: join(sharedModelsDir(), named.dir), label: named.label };
  return { dir: resolve(nameOrDir), label: `tokenizer from ${nameOrDir}` };
}

function readJson(path: string): Json | undefined {
  return existsSync(path) ? (JSON.parse(readFileSync(path, "utf8")) as Json) : undefined;
}

function tokenText(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as Json).content === "string") return (v as Json).content as string;
  return undefined;
}

interface Added {
  id: number;
  content: string;
  special: boolean;
}

/** Loads the tokenizer in `nameOrDir` and fits it to `vocabSize` ids (see the file comment). */
export function loadVocab(nameOrDir: string, vocabSize: number): Vocab {
  const { dir, label } = tokenizerDir(nameOrDir);
  const tokenizerPath = join(dir, "tokenizer.json");
  const tj = readJson(tokenizerPath);
  if (!tj) throw new Error(`no tokenizer.json in ${dir}`);
  const config = readJson(join(dir, "tokenizer_config.json")) ?? {};
  const specialMap = readJson(join(dir, "special_tokens_map.json"));
  const model = tj.model as Json;
  if (model?.type !== "BPE") throw new Error(`${tokenizerPath}: only BPE tokenizers are supported, got ${String(model?.type)}`);
  const spm = model.byte_fallback === true;

  const vocab = new Map(Object.entries(model.vocab as Record<string, number>));
  let added: Added[] = ((tj.added_tokens as Json[]) ?? []).map((t) => ({ id: t.id as number, content: t.content as string, special: t.special === true }));
  const rawMerges = model.merges as (string | [string, string])[];
  const pairOf = (m: string | [string, string]): [string, string] => (typeof m === "string" ? (m.split(" ", 2) as [string, string]) : m);
  let merges = rawMerges.map(pairOf);
  let size = 0;
  for (const id of [...vocab.values(), ...added.map((a) => a.id)]) size = Math.max(size, id + 1);

  let outJson = tj;
  let outConfig = config;
  let fitted = "";
  const changed = size > vocabSize;
  if (changed) {
    if (spm) throw new Error(`${label} has ${size} ids, more than the model's ${vocabSize}: cutting a SentencePiece vocab is not supported`);
    const relocate = added.filter((a) => a.id >= vocabSize - added.length).sort((a, b) => a.id - b.id);
    const top = vocabSize - relocate.length;
    const newId = new Map(relocate.map((a, i) => [a.id, top + i]));
    const addedIds = new Set(added.map((a) => a.id));
    const symbols = [...vocab.keys()].filter((t) => [...t].length === 1);
    for (const [tok, id] of vocab) if (id >= top && !addedIds.has(id)) vocab.delete(tok);
    for (const [tok, id] of vocab) if (newId.has(id)) vocab.set(tok, newId.get(id)!);
    const lost = symbols.filter((t) => !vocab.has(t));
    if (lost.length > 0) throw new Error(`cutting ${label} to ${vocabSize} ids would drop ${lost.length} single-symbol tokens`);
    merges = merges.filter(([a, b]) => vocab.has(a) && vocab.has(b) && vocab.has(a + b));
    added = added.map((a) => ({ ...a, id: newId.get(a.id) ?? a.id }));
    if (added.some((a) => a.id >= vocabSize)) throw new Error(`cannot fit the added tokens of ${label} into ${vocabSize} ids`);
    const remap = (id: number): number => newId.get(id) ?? id;
    outJson = {
      ...tj,
      added_tokens: (tj.added_tokens as Json[]).map((t) => ({ ...t, id: remap(t.id as number) })),
      post_processor: remapPostProcessor(tj.post_processor, remap),
      model: { ...model, vocab: Object.fromEntries(vocab), merges: typeof rawMerges[0] === "string" ? merges.map((m) => m.join(" ")) : merges },
    };
    const decoder = config.added_tokens_decoder as Record<string, unknown> | undefined;
    if (decoder) {
      outConfig = { ...config, added_tokens_decoder: Object.fromEntries(Object.entries(decoder).map(([k, v]) => [String(remap(Number(k))), v])) };
    }
    fitted = `cut to the model's ${vocabSize} ids: regular ids 0-${top - 1} kept, ${relocate.length} special tokens moved to ${top}-${vocabSize - 1}, ${merges.length} of ${rawMerges.length} merges kept`;
  } else if (size < vocabSize) {
    fitted = `${size} ids for ${vocabSize} embedding rows: tokenizer.json unchanged, GGUF token list padded with ${vocabSize - size} [PAD<id>] UNUSED tokens`;
  } else {
    fitted = `exact size (${size} ids)`;
  }

  // The GGUF view of the (fitted) vocabulary.
  const tokens: string[] = new Array<string>(vocabSize);
  const types = new Int32Array(vocabSize).fill(TOKEN_TYPE.unused);
  for (const [tok, id] of vocab) {
    tokens[id] = tok;
    types[id] = spm && /^<0x[0-9A-F]{2}>$/.test(tok) ? TOKEN_TYPE.byte : TOKEN_TYPE.normal;
  }
  for (const a of added) {
    tokens[a.id] = a.content;
    types[a.id] = a.special ? TOKEN_TYPE.control : TOKEN_TYPE.userDefined;
  }
  const unkName = tokenText(config.unk_token) ?? tokenText(specialMap?.unk_token) ?? (model.unk_token as string | undefined);
  const idOf = (t: string | undefined): number | undefined => (t === undefined ? undefined : added.find((a) => a.content === t)?.id ?? vocab.get(t));
  const unk = idOf(unkName ?? undefined);
  if (unk !== undefined) types[unk] = TOKEN_TYPE.unknown;
  for (let i = 0; i < vocabSize; i++) if (tokens[i] === undefined) tokens[i] = `[PAD${i}]`;

  const bos = idOf(tokenText(config.bos_token) ?? tokenText(specialMap?.bos_token));
  const eos = idOf(tokenText(config.eos_token) ?? tokenText(specialMap?.eos_token));
  const addBos = typeof config.add_bos_token === "boolean" ? config.add_bos_token : JSON.stringify(tj.post_processor ?? null).includes('"SpecialToken"');
  const gguf: GgufVocab = {
    model: spm ? "llama" : "gpt2",
    tokens, types, bos, eos, addBos,
    ...(typeof config.chat_template === "string" ? { chatTemplate: config.chat_template } : {}),
  };
  if (spm) {
    // llama.cpp's SentencePiece tokenizer merges the adjacent pair whose result scores highest;
    // HF merges by rank, so a merge result scores -rank and other pieces score lower still.
    const scores = new Float32Array(vocabSize);
    const rank = new Map<string, number>();
    merges.forEach(([a, b], r) => rank.has(a + b) || rank.set(a + b, r));
    for (const [tok, id] of vocab) if (types[id] === TOKEN_TYPE.normal) scores[id] = -(rank.get(tok) ?? merges.length + id);
    gguf.scores = scores;
    if (unk !== undefined) gguf.unk = unk;
  } else {
    gguf.merges = merges.map(([a, b]) => `${a} ${b}`);
    gguf.pre = preTokenizerName(tj.pre_tokenizer);
  }

  const files: Vocab["files"] = [
    changed ? { name: "tokenizer.json", content: JSON.stringify(outJson) } : { name: "tokenizer.json", copyFrom: tokenizerPath },
    changed ? { name: "tokenizer_config.json", content: JSON.stringify(outConfig, null, 2) } : { name: "tokenizer_config.json", copyFrom: join(dir, "tokenizer_config.json") },
  ];
  if (specialMap) files.push({ name: "special_tokens_map.json", copyFrom: join(dir, "special_tokens_map.json") });
  return { files: files.filter((f) => f.content !== undefined || existsSync(f.copyFrom!)), gguf, bosId: bos, eosId: eos, description: `${label} (${size} ids), ${fitted}` };
}

/** Rewrites the ids of TemplateProcessing special tokens (they name BOS/EOS by id). */
function remapPostProcessor(pp: unknown, remap: (id: number) => number): unknown {
  if (Array.isArray(pp)) return pp.map((x) => remapPostProcessor(x, remap));
  if (!pp || typeof pp !== "object") return pp;
  const out: Json = {};
  for (const [k, v] of Object.entries(pp as Json)) {
    out[k] = k === "ids" && Array.isArray(v) ? v.map((id) => (typeof id === "number" ? remap(id) : id)) : remapPostProcessor(v, remap);
  }
  return out;
}

/** llama.cpp's name for the pre-tokenizer regex (it cannot run arbitrary regexes). */
function preTokenizerName(pre: unknown): string {
  const text = JSON.stringify(pre ?? null);
  // The Llama 3 split regex (also Llama 3.1/3.2).
  if (text.includes("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}")) return "llama-bpe";
  return "default";
}
