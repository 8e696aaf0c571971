/**
 * Seeded single-field mutations of the shared test models, for the hostile-file fuzz run. The same
 * seed and index always give the same mutation, so any failure can be replayed alone
 * (`npm run fuzz -- --format gguf --seed S --only I`).
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync, copyFileSync } from "node:fs";
import { join } from "node:path";
import { makeRng } from "../reference/tiny-models.js";
import { fieldValue, ggufFields, withField, type GgufField } from "./gguf-fields.js";

/** A seeded uniform [0, 1) generator (mulberry32, shared with the tiny-model writer). */
export function prng(seed: number): () => number {
  return makeRng(seed).uniform;
}

function pick<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)]!;
}

export interface Mutation {
  index: number;
  /** What was changed, e.g. `llama.block_count := 100000`. */
  description: string;
  /** The mutated file (GGUF) or directory (MLX). */
  path: string;
  /** Bytes of the model (the file, or every file in the directory). */
  bytes: number;
}

// ---- GGUF ------------------------------------------------------------------------------------

function ggufValues(random: () => number, field: GgufField, current: number | bigint): (number | bigint)[] {
  if (field.kind === "float") return [0, -1, NaN, Infinity, -Infinity, 1e30, -1e-30, Number(current) * 2, 3.4e38];
  const max = (1n << BigInt(field.width * 8)) - 1n;
  const c = BigInt(current);
  return [0n, 1n, 2n, max, max >> 1n, (max >> 1n) + 1n, c + 1n, c - 1n, c * 2n, 18n, 40n, 100000n, 1n << 32n, 1n << 31n,
    BigInt(Math.floor(random() * 2 ** 32)), BigInt(Math.floor(random() * 43)) /* a ggml or value type id */];
}

/** The `index`-th GGUF mutation of `source` for `seed`: one field set to one value. */
export function ggufMutation(source: string, seed: number, index: number, outDir: string): Mutation {
  const buf = readFileSync(source);
  const fields = ggufFields(buf);
  const random = prng(seed * 1_000_003 + index);
  // Half the mutations hit the metadata (hyper-parameters, vocabulary), half the tensor infos, which outnumber them.
  const tensorFields = fields.filter((f) => f.name.startsWith("tensor "));
  const field = pick(random, random() < 0.5 ? tensorFields : fields.filter((f) => !f.name.startsWith("tensor ")));
  const current = fieldValue(buf, field);
  const same = (v: number | bigint) => (field.kind === "float" ? Object.is(Number(v), Number(current)) : BigInt.asUintN(field.width * 8, BigInt(v)) === BigInt.asUintN(field.width * 8, BigInt(current)));
  const values = ggufValues(random, field, current).filter((v) => !same(v)); // no no-op mutations
  const value = pick(random, values);
  const path = join(outDir, `gguf-${seed}-${index}.gguf`);
  writeFileSync(path, withField(buf, field, value));
  return { index, description: `${field.name} := ${String(value)} (was ${String(current)})`, path, bytes: buf.length };
}

// ---- MLX directories ---------------------------------------------------------------------------

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

const JSON_VALUES: Json[] = [0, -1, 1, 2 ** 31, 2 ** 31 - 1, 1073741832, 2 ** 53, 1e308, -1e308, 0.5, null, "x", [], {}, true, 4294967296];

/** Paths (key lists) of every value in a JSON document, objects and arrays included. */
function jsonPaths(value: Json, prefix: (string | number)[] = [], out: (string | number)[][] = [], limit = 400): (string | number)[][] {
  if (out.length >= limit) return out;
  if (prefix.length > 0) out.push(prefix);
  if (Array.isArray(value)) value.slice(0, 4).forEach((v, i) => jsonPaths(v, [...prefix, i], out, limit));
  else if (value && typeof value === "object") for (const [k, v] of Object.entries(value)) jsonPaths(v, [...prefix, k], out, limit);
  return out;
}

function setPath(root: Json, path: (string | number)[], value: Json | undefined): void {
  let node = root as Record<string | number, Json>;
  for (const key of path.slice(0, -1)) node = node[key] as Record<string | number, Json>;
  const last = path[path.length - 1]!;
  if (value === undefined) delete node[last];
  else node[last] = value;
}

/** config.json keys the engine reads that the shared models may lack: mutations may add them. */
const CONFIG_KEYS = ["head_dim", "max_position_embeddings", "rope_theta", "rope_scaling", "sliding_window", "num_key_value_heads", "rms_norm_eps"];
const LLAMA3_SCALING: Json = { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };

function mutateJson(random: () => number, text: string, extra: Json[] = [], addable: string[] = []): { text: string; what: string } {
  const doc = JSON.parse(text) as Json;
  const path = addable.length > 0 && random() < 0.3 ? [pick(random, addable)] : pick(random, jsonPaths(doc));
  const value = random() < 0.1 ? undefined : pick(random, [...JSON_VALUES, ...extra]);
  setPath(doc, path, value);
  return { text: JSON.stringify(doc), what: `${path.join(".")} := ${value === undefined ? "(removed)" : JSON.stringify(value)}` };
}

/** A safetensors file's header mutated: a tensor's dtype, shape or offsets, a duplicate key, or the length prefix. */
function mutateSafetensors(random: () => number, buf: Buffer): { buf: Buffer; what: string } {
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.toString("utf8", 8, 8 + n)) as Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>;
  const names = Object.keys(header).filter((k) => k !== "__metadata__");
  const name = pick(random, names);
  const entry = header[name]!;
  const kind = pick(random, ["dtype", "shape", "offset", "duplicate", "overlap", "length", "truncate"] as const);
  let text: string;
  let what: string;
  switch (kind) {
    case "dtype": entry.dtype = pick(random, ["F32", "F16", "BF16", "U32", "I64", "U8", "F64", "Q4", ""]); what = `${name} dtype := ${entry.dtype}`; break;
    case "shape": {
      const i = Math.floor(random() * (entry.shape.length + 1));
      const v = pick(random, [0, 1, 2 ** 31 - 1, 2 ** 31, 2 ** 40, -1, entry.shape[0]! * 2]);
      if (i === entry.shape.length) entry.shape.push(v); else entry.shape[i] = v;
      what = `${name} shape[${i}] := ${v}`;
      break;
    }
    case "offset": {
      const i = random() < 0.5 ? 0 : 1;
      entry.data_offsets[i] = pick(random, [0, 1, -1, 2 ** 53, entry.data_offsets[i]! + 4, entry.data_offsets[i]! - 4, n]);
      what = `${name} data_offsets[${i}] := ${entry.data_offsets[i]}`;
      break;
    }
    case "overlap": {
      const other = header[pick(random, names)]!;
      entry.data_offsets = [...other.data_offsets];
      entry.shape = [...other.shape];
      entry.dtype = other.dtype;
      what = `${name} := a copy of another tensor's range (overlap)`;
      break;
    }
    default: what = "";
  }
  if (kind === "duplicate") {
    // JSON.stringify cannot write a repeated key: splice the entry's text in a second time.
    text = JSON.stringify(header);
    const entryText = `${JSON.stringify(name)}:${JSON.stringify(entry)}`;
    text = text.replace("{", `{${entryText},`);
    what = `${name} appears twice`;
  } else text = JSON.stringify(header);
  if (kind === "length" || kind === "truncate") {
    const out = Buffer.from(buf);
    if (kind === "length") {
      const v = pick(random, [0n, 1n, BigInt(n) + 1n, BigInt(buf.length), (1n << 64n) - 1n, 1n << 40n]);
      out.writeBigUInt64LE(v, 0);
      return { buf: out, what: `header length := ${v}` };
    }
    const cut = Math.floor(random() * buf.length);
    return { buf: out.subarray(0, cut), what: `truncated to ${cut} bytes` };
  }
  const data = buf.subarray(8 + n);
  const headerBytes = Buffer.from(text, "utf8");
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes.length));
  return { buf: Buffer.concat([prefix, headerBytes, data]), what };
}

/** The `index`-th MLX-directory mutation of `sourceDir` for `seed`. */
export function mlxMutation(sourceDir: string, seed: number, index: number, outDir: string): Mutation {
  const random = prng(seed * 1_000_003 + index + 0x5bd1e995);
  const files = readdirSync(sourceDir).filter((f) => !f.startsWith("."));
  const dir = join(outDir, `mlx-${seed}-${index}`);
  mkdirSync(dir, { recursive: true });
  let bytes = 0;
  for (const f of files) {
    copyFileSync(join(sourceDir, f), join(dir, f));
    bytes += readFileSync(join(sourceDir, f)).length;
  }
  const targets = files.filter((f) => f.endsWith(".json") || f.endsWith(".safetensors"));
  // Weighted towards the files the engine parses itself.
  const target = pick(random, [...targets, "config.json", "config.json", ...targets.filter((f) => f.endsWith(".safetensors"))]);
  let what: string;
  if (target.endsWith(".safetensors")) {
    const m = mutateSafetensors(random, readFileSync(join(dir, target)));
    writeFileSync(join(dir, target), m.buf);
    what = m.what;
  } else {
    const extra: Json[] = target === "model.safetensors.index.json"
      ? ["../../../../etc/passwd", "/etc/passwd", "missing.safetensors", "model.safetensors/../model.safetensors"]
      : target === "tokenizer.json" ? ["Mystery", "BPE", "Unigram", "WordPiece"]
      : target === "config.json" ? [LLAMA3_SCALING, 1073741832, -1e-30] : [];
    const m = mutateJson(random, readFileSync(join(dir, target), "utf8"), extra, target === "config.json" ? CONFIG_KEYS : []);
    writeFileSync(join(dir, target), m.text);
    what = m.what;
  }
  return { index, description: `${target}: ${what}`, path: dir, bytes };
}
