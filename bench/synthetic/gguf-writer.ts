/**
 * Writes a synthetic model as a GGUF v3 file that llama.cpp loads like a converted model:
 * the hyperparameter keys convert_hf_to_gguf writes for `llama` / `qwen2`, the tokenizer in
 * `tokenizer.ggml.*`, and tensors under llama.cpp's names.
 *
 * Tensor types, as llama.cpp's tools produce them:
 * - f16 / q8_0 (convert_hf_to_gguf --outtype): every matrix F16 / Q8_0, vectors (norms, biases) F32.
 * - q4_0 (llama-quantize Q4_0): matrices Q4_0 except the output matrix (the token embedding when
 *   tied), which llama-quantize makes Q6_K, or Q8_0 when its row length is not a multiple of 256
 *   (SmolLM2's 576, Qwen2.5's 896). Q6_K is not implemented, so it is Q8_0 here for every shape;
 *   `pure: true` makes it Q4_0 like `llama-quantize --pure`.
 * Weights come from the same per-tensor streams as the MLX writer, so an f16 GGUF and an f16 MLX
 * directory of one seed hold identical values.
 */
import { closeSync, openSync } from "node:fs";
import { endianness } from "node:os";
import { quantizeQ4_0, quantizeQ8_0, Q4_0_BYTES, Q8_0_BYTES, QK } from "./ggml-quants.js";
import { CHUNK_VALUES, writeAt, type WriteResult } from "./mlx-writer.js";
import { TensorStream } from "./random.js";
import { SHAPES, tensorSpecs, type ModelShape, type TensorSpec } from "./shapes.js";
import { loadVocab, type GgufVocab } from "./vocab.js";

export type GgufDtype = "f16" | "q8_0" | "q4_0";

export interface GgufWriteOptions {
  shape: ModelShape;
  dtype: GgufDtype;
  seed: number;
  /** `llama3`, `llama2` or a directory with tokenizer.json. */
  tokenizer: string;
  /** q4_0 only: quantize the output matrix to Q4_0 too (llama-quantize --pure). */
  pure?: boolean;
  /**
   * Apply convert_hf_to_gguf's Q/K row permutation for llama (default true). Tests turn it off to
   * show that the cross-engine logit check notices a wrong RoPE layout.
   */
  permuteQK?: boolean;
}

// ggml_type ids, block sizes and bytes per block.
const GGML = {
  F32: { id: 0, block: 1, bytes: 4 },
  F16: { id: 1, block: 1, bytes: 2 },
  Q4_0: { id: 2, block: QK, bytes: Q4_0_BYTES },
  Q8_0: { id: 8, block: QK, bytes: Q8_0_BYTES },
} as const;
type GgmlType = keyof typeof GGML;

/** llama_ftype of the whole file (general.file_type). */
const FILE_TYPE: Record<GgufDtype, number> = { f16: 1, q4_0: 2, q8_0: 7 };
const ALIGNMENT = 32;

// ---- metadata encoding -------------------------------------------------------------------------

const VT = { u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9 } as const;

function str(s: string): Buffer {
  const body = Buffer.from(s, "utf8");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(body.length));
  return Buffer.concat([len, body]);
}

/** A string array in one allocation (the token list has up to ~150k entries). */
function stringArray(list: readonly string[]): Buffer {
  let size = 12;
  for (const s of list) size += 8 + Buffer.byteLength(s, "utf8");
  const buf = Buffer.alloc(size);
  buf.writeUInt32LE(VT.string, 0);
  buf.writeBigUInt64LE(BigInt(list.length), 4);
  let o = 12;
  for (const s of list) {
    const n = buf.write(s, o + 8, "utf8");
    buf.writeBigUInt64LE(BigInt(n), o);
    o += 8 + n;
  }
  return buf;
}

function numberArray(type: "i32" | "f32", values: Int32Array | Float32Array): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt32LE(VT[type], 0);
  head.writeBigUInt64LE(BigInt(values.length), 4);
  return Buffer.concat([head, Buffer.from(values.buffer, values.byteOffset, values.byteLength)]);
}

class Metadata {
  readonly parts: Buffer[] = [];
  count = 0;
  private add(key: string, type: number, value: Buffer): void {
    const t = Buffer.alloc(4);
    t.writeUInt32LE(type);
    this.parts.push(str(key), t, value);
    this.count++;
  }
  u32(key: string, v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.add(key, VT.u32, b);
  }
  f32(key: string, v: number): void {
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    this.add(key, VT.f32, b);
  }
  bool(key: string, v: boolean): void {
    this.add(key, VT.bool, Buffer.from([v ? 1 : 0]));
  }
  string(key: string, v: string): void {
    this.add(key, VT.string, str(v));
  }
  strings(key: string, v: readonly string[]): void {
    this.add(key, VT.array, stringArray(v));
  }
  numbers(key: string, type: "i32" | "f32", v: Int32Array | Float32Array): void {
    this.add(key, VT.array, numberArray(type, v));
  }
}

function metadata(s: ModelShape, o: GgufWriteOptions, vocab: GgufVocab, description: string): Metadata {
  const m = new Metadata();
  const a = s.arch;
  m.string("general.architecture", a);
  m.string("general.type", "model");
  m.string("general.name", `${s.source} (synthetic, random weights)`);
  m.string("general.description", description);
  m.u32("general.file_type", FILE_TYPE[o.dtype]);
  m.u32("general.quantization_version", 2);
  m.u32(`${a}.block_count`, s.layers);
  m.u32(`${a}.context_length`, s.maxPositions);
  m.u32(`${a}.embedding_length`, s.hidden);
  m.u32(`${a}.feed_forward_length`, s.intermediate);
  m.u32(`${a}.attention.head_count`, s.heads);
  m.u32(`${a}.attention.head_count_kv`, s.kvHeads);
  m.f32(`${a}.rope.freq_base`, s.ropeTheta);
  m.f32(`${a}.attention.layer_norm_rms_epsilon`, s.rmsEps);
  m.u32(`${a}.rope.dimension_count`, s.headDim);
  m.u32(`${a}.vocab_size`, s.vocab);

  m.string("tokenizer.ggml.model", vocab.model);
  if (vocab.pre) m.string("tokenizer.ggml.pre", vocab.pre);
  m.strings("tokenizer.ggml.tokens", vocab.tokens);
  if (vocab.scores) m.numbers("tokenizer.ggml.scores", "f32", vocab.scores);
  m.numbers("tokenizer.ggml.token_type", "i32", vocab.types);
  if (vocab.merges) m.strings("tokenizer.ggml.merges", vocab.merges);
  if (vocab.bos !== undefined) m.u32("tokenizer.ggml.bos_token_id", vocab.bos);
  if (vocab.eos !== undefined) m.u32("tokenizer.ggml.eos_token_id", vocab.eos);
  if (vocab.unk !== undefined) m.u32("tokenizer.ggml.unknown_token_id", vocab.unk);
  m.bool("tokenizer.ggml.add_bos_token", vocab.addBos);
  m.bool("tokenizer.ggml.add_eos_token", false);
  if (vocab.chatTemplate) m.string("tokenizer.chat_template", vocab.chatTemplate);
  return m;
}

// ---- tensors -------------------------------------------------------------------------------------

interface Planned {
  name: string;
  /** ggml dims: ne0 (row length) first, the reverse of the HF shape. */
  ne: number[];
  type: GgmlType;
  bytes: number;
  offset: number;
  spec?: TensorSpec;
  /** Fixed values (rope_freqs). */
  values?: Float32Array;
}

function tensorType(spec: TensorSpec, s: ModelShape, o: GgufWriteOptions): GgmlType {
  if (spec.shape.length === 1) return "F32";
  if (o.dtype === "f16") return "F16";
  if (o.dtype === "q8_0") return "Q8_0";
  const isOutput = spec.gguf === "output.weight" || (s.tied && spec.gguf === "token_embd.weight");
  return isOutput && !o.pure ? "Q8_0" : "Q4_0";
}

/**
 * Llama 3 RoPE scaling: llama.cpp reads per-frequency divisors from a `rope_freqs.weight` tensor,
 * which convert_hf_to_gguf computes from rope_scaling (the same schedule as mlx-lm's Llama3RoPE).
 */
function llama3RopeFactors(s: ModelShape): Float32Array | undefined {
  const r = s.ropeScaling;
  if (!r || r.rope_type !== "llama3") return undefined;
  const factor = Number(r.factor ?? 8);
  const low = Number(r.low_freq_factor ?? 1);
  const high = Number(r.high_freq_factor ?? 4);
  const oldCtx = Number(r.original_max_position_embeddings ?? 8192);
  const out = new Float32Array(s.headDim / 2);
  for (let i = 0; i < out.length; i++) {
    const wavelen = (2 * Math.PI) / (1 / s.ropeTheta ** ((2 * i) / s.headDim));
    if (wavelen < oldCtx / high) out[i] = 1;
    else if (wavelen > oldCtx / low) out[i] = factor;
    else {
      const smooth = (oldCtx / wavelen - low) / (high - low);
      out[i] = 1 / ((1 - smooth) / factor + smooth);
    }
  }
  return out;
}

function plan(s: ModelShape, o: GgufWriteOptions): Planned[] {
  const list: Planned[] = [];
  const add = (p: Omit<Planned, "bytes" | "offset">): void => {
    const n = p.ne.reduce((x, y) => x * y, 1);
    const t = GGML[p.type];
    if (p.ne[0] % t.block !== 0) throw new Error(`${p.name}: row length ${p.ne[0]} is not a multiple of ${t.block} (${p.type})`);
    list.push({ ...p, bytes: (n / t.block) * t.bytes, offset: 0 });
  };
  for (const spec of tensorSpecs(s)) {
    add({ name: spec.gguf, ne: [...spec.shape].reverse(), type: tensorType(spec, s, o), spec });
    const factors = spec.gguf === "token_embd.weight" ? llama3RopeFactors(s) : undefined;
    if (factors) add({ name: "rope_freqs.weight", ne: [factors.length], type: "F32", values: factors });
  }
  let offset = 0;
  for (const p of list) {
    p.offset = offset;
    offset += Math.ceil(p.bytes / ALIGNMENT) * ALIGNMENT;
  }
  return list;
}

function tensorInfo(p: Planned): Buffer {
  const b = Buffer.alloc(4 + 8 * p.ne.length + 4 + 8);
  let o = b.writeUInt32LE(p.ne.length, 0);
  for (const d of p.ne) o = b.writeBigUInt64LE(BigInt(d), o);
  o = b.writeUInt32LE(GGML[p.type].id, o);
  b.writeBigUInt64LE(BigInt(p.offset), o);
  return Buffer.concat([str(p.name), b]);
}

/** Encodes row-major values (float16 bits + their float32 values) as `type`. */
function encode(type: GgmlType, bits: Uint16Array, values: Float32Array): ArrayBufferView {
  if (type === "F16") return bits;
  if (type === "F32") return values;
  const out = new Uint8Array((values.length / QK) * GGML[type].bytes);
  if (type === "Q8_0") quantizeQ8_0(values, out);
  else quantizeQ4_0(values, out);
  return out;
}

/** HF rotate-half rows -> llama.cpp interleaved rows: new row (h, 2i + j) = old row (h, j * half + i). */
function permuteRows<T extends Uint16Array | Float32Array>(data: T, heads: number, cols: number): T {
  const out = new (data.constructor as { new (n: number): T })(data.length);
  const headDim = data.length / cols / heads;
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const from = (h * headDim + j * half + i) * cols;
        out.set(data.subarray(from, from + cols), (h * headDim + 2 * i + j) * cols);
      }
    }
  }
  return out;
}

/** Writes the GGUF file `path` and returns what was written. */
export function writeGgufModel(path: string, o: GgufWriteOptions): WriteResult {
  if (endianness() !== "LE") throw new Error("the synthetic model writer assumes a little-endian host");
  const start = performance.now();
  const s = o.shape;
  const vocab = loadVocab(o.tokenizer, s.vocab);
  const reduced = s.layers !== SHAPES[s.name].layers ? ` (depth reduced to ${s.layers} layers)` : "";
  const notes = [
    `exact: hyperparameters and every weight shape of ${s.source}${reduced}; tensor types as llama.cpp's tools write ${o.dtype}${o.dtype === "q4_0" && !o.pure ? " (output matrix Q8_0)" : ""}`,
    `substituted: random weights (seed ${o.seed}); tokenizer: ${vocab.description}`,
  ];
  const meta = metadata(s, o, vocab.gguf, notes.join("; "));
  const tensors = plan(s, o);

  const head = Buffer.alloc(24);
  head.write("GGUF", 0, "latin1");
  head.writeUInt32LE(3, 4);
  head.writeBigUInt64LE(BigInt(tensors.length), 8);
  head.writeBigUInt64LE(BigInt(meta.count), 16);
  const prefix = Buffer.concat([head, ...meta.parts, ...tensors.map(tensorInfo)]);
  const dataStart = Math.ceil(prefix.length / ALIGNMENT) * ALIGNMENT;
  const last = tensors[tensors.length - 1];
  const total = dataStart + last.offset + Math.ceil(last.bytes / ALIGNMENT) * ALIGNMENT;

  const fd = openSync(path, "w");
  try {
    writeAt(fd, 0, Buffer.concat([prefix, Buffer.alloc(dataStart - prefix.length)]));
    for (const t of tensors) writeTensor(fd, dataStart + t.offset, t, o);
    // Pad the last tensor to the alignment, as gguf-py does.
    const end = dataStart + last.offset + last.bytes;
    if (total > end) writeAt(fd, end, Buffer.alloc(total - end));
  } finally {
    closeSync(fd);
  }
  return { path, files: [{ name: path, bytes: total }], weightBytes: total, seconds: (performance.now() - start) / 1000, notes };
}

function writeTensor(fd: number, position: number, t: Planned, o: GgufWriteOptions): void {
  if (t.values) {
    writeAt(fd, position, t.values);
    return;
  }
  const spec = t.spec!;
  const stream = new TensorStream(o.seed, spec.name, spec.init);
  const cols = t.ne[0];
  const rows = t.ne.length > 1 ? t.ne[1] : 1;
  const rowBytes = (cols / GGML[t.type].block) * GGML[t.type].bytes;
  if (spec.ropePermuteHeads && o.permuteQK !== false) {
    // q/k are small (at most hidden x hidden): permute the whole tensor at once.
    const bits = new Uint16Array(rows * cols);
    const values = new Float32Array(rows * cols);
    stream.next(bits, values);
    const heads = spec.ropePermuteHeads;
    writeAt(fd, position, encode(t.type, permuteRows(bits, heads, cols), permuteRows(values, heads, cols)));
    return;
  }
  const chunkRows = Math.max(1, Math.floor(CHUNK_VALUES / cols));
  const bits = new Uint16Array(Math.min(rows, chunkRows) * cols);
  const values = new Float32Array(bits.length);
  for (let r = 0; r < rows; r += chunkRows) {
    const n = Math.min(chunkRows, rows - r) * cols;
    stream.next(bits.subarray(0, n), values.subarray(0, n));
    writeAt(fd, position + r * rowBytes, encode(t.type, bits.subarray(0, n), values.subarray(0, n)));
  }
}
