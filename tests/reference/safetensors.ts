// Minimal safetensors reader/writer for tests: independent of the native engine so that
// the engine's loader can be checked against files we know are well-formed (or broken).
import { readFileSync, writeFileSync } from "node:fs";
import { endianness } from "node:os";

export type SafetensorsDtype = "F32" | "F16" | "BF16" | "U32" | "I32";
export type TensorData = Float32Array | Uint32Array | Int32Array | Uint16Array;

export interface TensorInput {
  dtype: SafetensorsDtype;
  shape: number[];
  /** F16/BF16 accept a Float32Array (rounded RNE on write) or raw bits as Uint16Array. */
  data: TensorData;
}

export interface DecodedTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  /** F32/F16/BF16 -> Float32Array, U32 -> Uint32Array, I32 -> Int32Array. */
  data: Float32Array | Uint32Array | Int32Array;
}

interface HeaderEntry {
  dtype: SafetensorsDtype;
  shape: number[];
  data_offsets: [number, number];
}

export const DTYPE_BYTES: Record<SafetensorsDtype, number> = { F32: 4, F16: 2, BF16: 2, U32: 4, I32: 4 };

// ---- float16 / bfloat16 bit conversions (round-to-nearest-even, IEEE specials kept) ----
const f32Buf = new Float32Array(1);
const u32Buf = new Uint32Array(f32Buf.buffer);

export function f32ToF16Bits(v: number): number {
  f32Buf[0] = v;
  const x = u32Buf[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // f16 subnormal: value = h * 2^-24, so drop (14 - e) mantissa bits of the implicit-1 mantissa.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1) === 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (up to Inf).
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++;
  return sign | h;
}

export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

export function f32ToBF16Bits(v: number): number {
  f32Buf[0] = v;
  const x = u32Buf[0];
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16BitsToF32(h: number): number {
  u32Buf[0] = (h & 0xffff) << 16;
  return f32Buf[0];
}

/** Round every value to the nearest representable value of `dtype` (result stays float32). */
export function roundTo(data: Float32Array, dtype: "float32" | "float16" | "bfloat16"): Float32Array {
  if (dtype === "float32") return Float32Array.from(data);
  const out = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) {
    out[i] = dtype === "float16" ? f16BitsToF32(f32ToF16Bits(data[i])) : bf16BitsToF32(f32ToBF16Bits(data[i]));
  }
  return out;
}

function encode(name: string, t: TensorInput): Buffer {
  const n = t.shape.reduce((a, b) => a * b, 1);
  if (t.data.length !== n) throw new Error(`${name}: data length ${t.data.length} != shape product ${n}`);
  const buf = Buffer.alloc(n * DTYPE_BYTES[t.dtype]);
  if (t.dtype === "F16" || t.dtype === "BF16") {
    const conv = t.dtype === "F16" ? f32ToF16Bits : f32ToBF16Bits;
    const raw = t.data instanceof Uint16Array;
    if (!raw && !(t.data instanceof Float32Array)) throw new Error(`${name}: ${t.dtype} needs Float32Array or Uint16Array`);
    for (let i = 0; i < n; i++) buf.writeUInt16LE(raw ? t.data[i] : conv(t.data[i]), i * 2);
  } else if (t.dtype === "F32") {
    if (!(t.data instanceof Float32Array)) throw new Error(`${name}: F32 needs Float32Array`);
    for (let i = 0; i < n; i++) buf.writeFloatLE(t.data[i], i * 4);
  } else if (t.dtype === "U32") {
    if (!(t.data instanceof Uint32Array)) throw new Error(`${name}: U32 needs Uint32Array`);
    for (let i = 0; i < n; i++) buf.writeUInt32LE(t.data[i], i * 4);
  } else {
    if (!(t.data instanceof Int32Array)) throw new Error(`${name}: I32 needs Int32Array`);
    for (let i = 0; i < n; i++) buf.writeInt32LE(t.data[i], i * 4);
  }
  return buf;
}

/** Serialize to safetensors bytes; header is space-padded to 8-byte alignment like the Rust crate. */
export function encodeSafetensors(tensors: Record<string, TensorInput>, metadata?: Record<string, string>): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  const bodies: Buffer[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const body = encode(name, t);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + body.length] };
    bodies.push(body);
    offset += body.length;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const hbuf = Buffer.from(json, "utf8");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(hbuf.length));
  return Buffer.concat([len, hbuf, ...bodies]);
}

export function writeSafetensors(
  path: string,
  tensors: Record<string, TensorInput>,
  metadata: Record<string, string> = { format: "pt" },
): number {
  const buf = encodeSafetensors(tensors, metadata);
  writeFileSync(path, buf);
  return buf.length;
}

export interface SafetensorsHeader {
  headerLength: number;
  entries: Record<string, HeaderEntry>;
  metadata: Record<string, string>;
}

function parseHeader(buf: Buffer, path: string): SafetensorsHeader {
  if (buf.length < 8) throw new Error(`${path}: file too small for safetensors header`);
  const n = Number(buf.readBigUInt64LE(0));
  if (n > buf.length - 8) throw new Error(`${path}: header length ${n} exceeds file size ${buf.length}`);
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(buf.subarray(8, 8 + n).toString("utf8")) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${path}: invalid JSON header (${(e as Error).message})`);
  }
  const { __metadata__, ...rest } = parsed;
  return { headerLength: n, entries: rest as Record<string, HeaderEntry>, metadata: (__metadata__ ?? {}) as Record<string, string> };
}

export function readSafetensorsHeader(path: string): SafetensorsHeader {
  return parseHeader(readFileSync(path), path);
}

let f16Lut: Float32Array | undefined;
function f16Table(): Float32Array {
  if (!f16Lut) {
    f16Lut = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Lut[h] = f16BitsToF32(h);
  }
  return f16Lut;
}

export function readSafetensors(path: string): Record<string, DecodedTensor> {
  if (endianness() !== "LE") throw new Error("readSafetensors assumes a little-endian host");
  const buf = readFileSync(path);
  const { headerLength, entries } = parseHeader(buf, path);
  const base = 8 + headerLength;
  const out: Record<string, DecodedTensor> = {};
  for (const [name, e] of Object.entries(entries)) {
    const size = DTYPE_BYTES[e.dtype];
    if (!size) throw new Error(`${path}: ${name}: unsupported dtype ${e.dtype}`);
    const n = e.shape.reduce((a, b) => a * b, 1);
    const [s, end] = e.data_offsets;
    if (end - s !== n * size || base + end > buf.length) throw new Error(`${path}: ${name}: bad data_offsets [${s}, ${end}]`);
    const p = base + s;
    // Copy into a fresh (aligned) ArrayBuffer; typed arrays are host-endian (checked LE above).
    const bytes = buf.buffer.slice(buf.byteOffset + p, buf.byteOffset + p + n * size);
    let data: Float32Array | Uint32Array | Int32Array;
    if (e.dtype === "F32") data = new Float32Array(bytes);
    else if (e.dtype === "U32") data = new Uint32Array(bytes);
    else if (e.dtype === "I32") data = new Int32Array(bytes);
    else {
      const bits = new Uint16Array(bytes);
      data = new Float32Array(n);
      if (e.dtype === "F16") {
        const table = f16Table();
        for (let i = 0; i < n; i++) data[i] = table[bits[i]];
      } else {
        const wide = new Uint32Array(data.buffer);
        for (let i = 0; i < n; i++) wide[i] = bits[i] << 16;
      }
    }
    out[name] = { dtype: e.dtype, shape: e.shape.slice(), data };
  }
  return out;
}

export type CorruptionKind = "truncated" | "header-too-large" | "invalid-json" | "bad-offsets";

/**
 * Write a deliberately broken safetensors file for loader error tests:
 * - truncated: valid header, tensor data cut in half
 * - header-too-large: the u64 header length exceeds the file size
 * - invalid-json: correct length prefix but the header is not JSON
 * - bad-offsets: JSON parses but a tensor's data_offsets run past the end of the file
 */
export function writeCorruptSafetensors(path: string, kind: CorruptionKind, tensors?: Record<string, TensorInput>): void {
  const t = tensors ?? { "model.norm.weight": { dtype: "F32", shape: [16], data: new Float32Array(16).fill(1) } };
  const good = encodeSafetensors(t, { format: "pt" });
  const n = Number(good.readBigUInt64LE(0));
  let bad: Buffer;
  if (kind === "truncated") {
    bad = good.subarray(0, 8 + n + Math.floor((good.length - 8 - n) / 2));
  } else if (kind === "header-too-large") {
    bad = Buffer.from(good);
    bad.writeBigUInt64LE(BigInt(good.length * 4), 0);
  } else if (kind === "invalid-json") {
    const junk = Buffer.from('{"model.norm.weight": {"dtype": "F32", "shape": [16', "utf8");
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(junk.length));
    bad = Buffer.concat([len, junk, good.subarray(8 + n)]);
  } else {
    const header = JSON.parse(good.subarray(8, 8 + n).toString("utf8")) as Record<string, HeaderEntry>;
    const first = Object.keys(header).find((k) => k !== "__metadata__")!;
    const [s, e] = header[first].data_offsets;
    header[first].data_offsets = [s + 1024, e + 1024];
    const h = Buffer.from(JSON.stringify(header), "utf8");
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(h.length));
    bad = Buffer.concat([len, h, good.subarray(8 + n)]);
  }
  writeFileSync(path, bad);
}
