/**
 * Writes a synthetic model as an mlx-lm directory: config.json, safetensors shards with
 * model.safetensors.index.json, and the tokenizer files.
 *
 * The layout follows mlx-lm's save_model: shards of at most 5 GiB by default (make_shards:
 * a new shard starts when the next tensor would cross the limit), `model.safetensors` when one
 * shard suffices, an index with a sorted weight_map always, `{"format": "mlx"}` metadata.
 * q4 is mlx-lm's default quantization: affine, 4 bits, group 64, on every Linear and the
 * Embedding whose input size is a multiple of 64; scales/biases in the weight dtype (float16).
 *
 * Streaming: every size is known from the shapes, so the headers are written first and each
 * tensor is generated and encoded a few MB at a time straight to its offset in the file.
 */
import { closeSync, copyFileSync, mkdirSync, openSync, statSync, writeFileSync, writeSync } from "node:fs";
import { endianness } from "node:os";
import { join } from "node:path";
import { quantize } from "../../tests/reference/quantize.js";
import { f32ToF16Bits } from "../../tests/reference/safetensors.js";
import { TensorStream } from "./random.js";
import { hfConfig, parameterCount, SHAPES, tensorSpecs, type ModelShape, type TensorSpec } from "./shapes.js";
import { loadVocab } from "./vocab.js";

export type MlxDtype = "float16" | "q4";

export interface MlxWriteOptions {
  shape: ModelShape;
  dtype: MlxDtype;
  seed: number;
  /** `llama3`, `llama2` or a directory with tokenizer.json. */
  tokenizer: string;
  /** Largest shard in bytes; mlx-lm uses 5 GiB. */
  maxShardBytes?: number;
}

export interface WrittenFile {
  name: string;
  bytes: number;
}

export interface WriteResult {
  path: string;
  files: WrittenFile[];
  /** Bytes of weight files. */
  weightBytes: number;
  seconds: number;
  /** What is exact and what is substituted. */
  notes: string[];
}

/** File that marks a directory as written by this tool. */
export const SYNTHETIC_MARKER = "synthetic.json";
const GROUP_SIZE = 64;
const BITS = 4;
/** Values generated per chunk: ~8 MB of float16, large enough that per-call overhead vanishes. */
export const CHUNK_VALUES = 1 << 22;

interface Entry {
  name: string;
  dtype: "F16" | "U32";
  shape: number[];
  bytes: number;
  shard: number;
  /** Offset in the shard's data section. */
  offset: number;
}

/** A weight tensor with the safetensors entries it becomes (1 float, or packed + scales + biases). */
interface Planned {
  spec: TensorSpec;
  entries: Entry[];
}

const elements = (shape: number[]): number => shape.reduce((a, b) => a * b, 1);

function plan(shape: ModelShape, dtype: MlxDtype, maxShardBytes: number): { tensors: Planned[]; shards: Entry[][] } {
  const tensors: Planned[] = [];
  const entry = (name: string, dt: Entry["dtype"], s: number[]): Entry => ({ name, dtype: dt, shape: s, bytes: elements(s) * (dt === "F16" ? 2 : 4), shard: 0, offset: 0 });
  for (const spec of tensorSpecs(shape)) {
    const [rows, cols] = spec.shape;
    if (dtype === "q4" && spec.shape.length === 2 && cols % GROUP_SIZE === 0) {
      const base = spec.name.slice(0, -".weight".length);
      const g = [rows, cols / GROUP_SIZE];
      tensors.push({ spec, entries: [entry(spec.name, "U32", [rows, (cols * BITS) / 32]), entry(base + ".scales", "F16", g), entry(base + ".biases", "F16", g)] });
    } else {
      tensors.push({ spec, entries: [entry(spec.name, "F16", spec.shape)] });
    }
  }
  // mlx-lm make_shards, in parameter order.
  const shards: Entry[][] = [[]];
  let size = 0;
  for (const e of tensors.flatMap((t) => t.entries)) {
    if (size + e.bytes > maxShardBytes && shards[shards.length - 1].length > 0) {
      shards.push([]);
      size = 0;
    }
    e.shard = shards.length - 1;
    e.offset = size;
    shards[shards.length - 1].push(e);
    size += e.bytes;
  }
  return { tensors, shards };
}

/** safetensors header: u64 length + JSON, space-padded to 8 bytes (as the Rust crate and MLX do). */
function header(entries: Entry[]): Buffer {
  const h: Record<string, unknown> = { __metadata__: { format: "mlx" } };
  for (const e of entries) h[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [e.offset, e.offset + e.bytes] };
  let json = JSON.stringify(h);
  json += " ".repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const body = Buffer.from(json, "utf8");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(body.length));
  return Buffer.concat([len, body]);
}

/** Writes all of `data` at `position` of the open file. */
export function writeAt(fd: number, position: number, data: ArrayBufferView): void {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  let done = 0;
  while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done, position + done);
}

/** Writes the MLX directory `dir` and returns what was written. */
export function writeMlxModel(dir: string, o: MlxWriteOptions): WriteResult {
  if (endianness() !== "LE") throw new Error("the synthetic model writer assumes a little-endian host");
  const start = performance.now();
  const { shape } = o;
  const vocab = loadVocab(o.tokenizer, shape.vocab);
  const { tensors, shards } = plan(shape, o.dtype, o.maxShardBytes ?? 5 * 2 ** 30);
  mkdirSync(dir, { recursive: true });

  const names = shards.length === 1 ? ["model.safetensors"] : shards.map((_, i) => `model-${String(i + 1).padStart(5, "0")}-of-${String(shards.length).padStart(5, "0")}.safetensors`);
  const headers = shards.map(header);
  const fds = names.map((n) => openSync(join(dir, n), "w"));
  const files: WrittenFile[] = [];
  try {
    headers.forEach((h, i) => writeAt(fds[i], 0, h));
    const where = (e: Entry, byteOffset: number): [number, number] => [fds[e.shard], headers[e.shard].length + e.offset + byteOffset];
    for (const { spec, entries } of tensors) writeTensor(spec, entries, o.seed, where);
  } finally {
    for (const fd of fds) closeSync(fd);
  }
  let weightBytes = 0;
  names.forEach((n, i) => {
    const bytes = headers[i].length + shards[i].reduce((s, e) => s + e.bytes, 0);
    weightBytes += bytes;
    files.push({ name: n, bytes });
  });

  const weightMap: Record<string, string> = {};
  for (const e of shards.flat()) weightMap[e.name] = names[e.shard];
  const index = {
    metadata: { total_size: shards.flat().reduce((s, e) => s + e.bytes, 0), total_parameters: parameterCount(shape) },
    weight_map: Object.fromEntries(Object.keys(weightMap).sort().map((k) => [k, weightMap[k]])),
  };
  const config = hfConfig(shape, {
    bosId: vocab.bosId,
    eosId: vocab.eosId,
    dtype: "float16",
    ...(o.dtype === "q4" ? { quantization: { group_size: GROUP_SIZE, bits: BITS } } : {}),
  });
  const notes = [
    `exact: config.json hyperparameters and every weight shape of ${shape.source}${shape.layers !== SHAPES[shape.name].layers ? ` (depth reduced to ${shape.layers} layers)` : ""}`,
    `substituted: random weights (seed ${o.seed}); tokenizer: ${vocab.description}`,
  ];
  // Marks the directory as generated (make-model only replaces directories that carry it).
  const marker = { generator: "mlx-node bench/synthetic", shape: shape.name, layers: shape.layers, source: shape.source, dtype: o.dtype, seed: o.seed, tokenizer: o.tokenizer, notes };
  const text: [string, string][] = [
    ["config.json", JSON.stringify(config, null, 4)],
    ["model.safetensors.index.json", JSON.stringify(index, null, 4)],
    [SYNTHETIC_MARKER, JSON.stringify(marker, null, 2)],
  ];
  for (const f of vocab.files) {
    if (f.content !== undefined) text.push([f.name, f.content]);
    else {
      copyFileSync(f.copyFrom!, join(dir, f.name));
      files.push({ name: f.name, bytes: statSync(f.copyFrom!).size });
    }
  }
  for (const [name, content] of text) {
    writeFileSync(join(dir, name), content);
    files.push({ name, bytes: Buffer.byteLength(content) });
  }
  return {
    path: dir,
    files,
    weightBytes,
    seconds: (performance.now() - start) / 1000,
    notes,
  };
}

/** Generates one tensor chunk by chunk and writes its float16 or packed form. */
function writeTensor(spec: TensorSpec, entries: Entry[], seed: number, where: (e: Entry, byteOffset: number) => [number, number]): void {
  const stream = new TensorStream(seed, spec.name, spec.init);
  const rows = spec.shape.length === 2 ? spec.shape[0] : 1;
  const cols = spec.shape[spec.shape.length - 1];
  const chunkRows = Math.max(1, Math.floor(CHUNK_VALUES / cols));
  const quantized = entries.length === 3;
  const bits = new Uint16Array(Math.min(rows, chunkRows) * cols);
  const values = quantized ? new Float32Array(bits.length) : undefined;
  for (let r = 0; r < rows; r += chunkRows) {
    const n = Math.min(chunkRows, rows - r);
    const b = bits.subarray(0, n * cols);
    const v = values?.subarray(0, n * cols);
    stream.next(b, v);
    if (!quantized) {
      writeAt(...where(entries[0], r * cols * 2), b);
      continue;
    }
    // Exact MLX affine quantization (CPU kernel rules) of float16 values.
    const q = quantize(v!, n, cols, GROUP_SIZE, BITS, "float16");
    const groups = (n * cols) / GROUP_SIZE;
    writeAt(...where(entries[0], (r * cols * BITS) / 8), q.wq);
    writeAt(...where(entries[1], (r * cols * 2) / GROUP_SIZE), toF16(q.scales, groups));
    writeAt(...where(entries[2], (r * cols * 2) / GROUP_SIZE), toF16(q.biases, groups));
  }
}

function toF16(v: Float32Array, n: number): Uint16Array {
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i++) out[i] = f32ToF16Bits(v[i]);
  return out;
}
