/**
 * A bounded reader of the GGUF header (metadata and tensor infos), written so that a hostile file
 * cannot make it allocate or loop more than the file itself allows: every count and length is
 * checked against the bytes left in the file before it is used, the file is read in chunks of at
 * most 64 KiB, and only what the checks need is kept (arrays keep their element type and length,
 * plus the values of numeric arrays the validator reads).
 *
 * Layout (GGUF v2/v3, little-endian): magic "GGUF", u32 version, u64 tensor count, u64 metadata
 * count, the metadata (string key, u32 type, value), the tensor infos (string name, u32 n_dims,
 * u64 dims[n_dims], u32 ggml type, u64 offset), then the data section at the next multiple of
 * `general.alignment` (default 32).
 */
import { open, type FileHandle } from "node:fs/promises";
import { ModelFormatError } from "../errors.js";

/** GGUF metadata value types, by id. */
export const GGUF_VALUE_TYPES = [
  "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
] as const;
export type GgufValueType = (typeof GGUF_VALUE_TYPES)[number];

const FIXED_SIZES: Partial<Record<GgufValueType, number>> = {
  u8: 1, i8: 1, bool: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, u64: 8, i64: 8, f64: 8,
};

/** A metadata value: scalars as numbers (64-bit integers as bigint), strings, arrays summarized. */
export type GgufValue =
  | { type: Exclude<GgufValueType, "array" | "string" | "u64" | "i64">; value: number }
  | { type: "u64" | "i64"; value: bigint }
  | { type: "string"; value: string }
  | { type: "array"; elementType: GgufValueType; length: number; numbers?: number[] };

export interface GgufKv {
  key: string;
  /** Byte offset of the key in the file, for error messages. */
  offset: number;
  value: GgufValue;
}

export interface GgufTensorInfo {
  name: string;
  /** Byte offset of the tensor info in the file. */
  offset: number;
  dims: bigint[];
  ggmlType: number;
  /** Offset of the tensor data, relative to the data section. */
  dataOffset: bigint;
}

export interface GgufHeader {
  version: number;
  fileSize: number;
  metadata: Map<string, GgufKv>;
  tensors: GgufTensorInfo[];
  /** Where the tensor infos end (before alignment padding). */
  headerEnd: number;
}

/** Numeric arrays whose values the validator reads (kept only when at most this many elements). */
const KEEP_NUMBERS_MAX = 4096;
/** Longest key or tensor name accepted (llama.cpp's tensor names are shorter than 64 bytes). */
const MAX_NAME_BYTES = 65536;
const CHUNK = 64 * 1024;

/** Thrown for a structural problem; `field` names the field. Turned into ModelFormatError by the caller. */
export class GgufReadError extends Error {
  /** @param offset where the field is in the file; undefined for a field that is missing. */
  constructor(readonly field: string, readonly offset: number | undefined, readonly problem: string) {
    super(`${field}${offset === undefined ? "" : ` at byte ${offset}`}: ${problem}`);
  }
}

/** Sequential reader over a file handle with a small window; never reads past the file size. */
class BoundedReader {
  pos = 0;
  private buf: Buffer;
  private bufStart = 0;
  private bufEnd = 0;

  constructor(private readonly handle: FileHandle, readonly size: number) {
    this.buf = Buffer.alloc(Math.min(CHUNK, Math.max(size, 1)));
  }

  get remaining(): number {
    return this.size - this.pos;
  }

  /** Makes `n` bytes at `pos` available in the window (n ≤ window size), or throws at end of file. */
  private async need(n: number, field: string): Promise<number> {
    if (n > this.remaining) {
      throw new GgufReadError(field, this.pos, `needs ${n} bytes but the file ends ${this.remaining} bytes later`);
    }
    if (this.pos >= this.bufStart && this.pos + n <= this.bufEnd) return this.pos - this.bufStart;
    if (n > this.buf.length) this.buf = Buffer.alloc(n); // only strings up to MAX_NAME_BYTES or the remaining file
    const want = Math.min(this.buf.length, this.remaining);
    const { bytesRead } = await this.handle.read(this.buf, 0, want, this.pos);
    if (bytesRead < n) throw new GgufReadError(field, this.pos, "the file was truncated while reading");
    this.bufStart = this.pos;
    this.bufEnd = this.pos + bytesRead;
    return 0;
  }

  async u32(field: string): Promise<number> {
    const at = await this.need(4, field);
    this.pos += 4;
    return this.buf.readUInt32LE(at);
  }

  async u64(field: string): Promise<bigint> {
    const at = await this.need(8, field);
    this.pos += 8;
    return this.buf.readBigUInt64LE(at);
  }

  async scalar(type: GgufValueType, field: string): Promise<GgufValue> {
    const size = FIXED_SIZES[type] as number;
    const at = await this.need(size, field);
    this.pos += size;
    const b = this.buf;
    switch (type) {
      case "u8": return { type, value: b.readUInt8(at) };
      case "i8": return { type, value: b.readInt8(at) };
      case "bool": {
        const value = b.readUInt8(at);
        if (value > 1) throw new GgufReadError(field, this.pos - 1, `bool value ${value} is neither 0 nor 1`);
        return { type, value };
      }
      case "u16": return { type, value: b.readUInt16LE(at) };
      case "i16": return { type, value: b.readInt16LE(at) };
      case "u32": return { type, value: b.readUInt32LE(at) };
      case "i32": return { type, value: b.readInt32LE(at) };
      case "f32": return { type, value: b.readFloatLE(at) };
      case "f64": return { type, value: b.readDoubleLE(at) };
      case "u64": return { type, value: b.readBigUInt64LE(at) };
      case "i64": return { type, value: b.readBigInt64LE(at) };
      default: throw new Error(`not a scalar type: ${type}`);
    }
  }

  /** A length-prefixed string; `max` bounds its length before anything is allocated. */
  async string(field: string, max = Number.MAX_SAFE_INTEGER): Promise<string> {
    const start = this.pos;
    const length = await this.u64(field);
    if (length > BigInt(Math.min(max, this.remaining))) {
      throw new GgufReadError(field, start, `string length ${length} exceeds ${length > BigInt(this.remaining) ? `the ${this.remaining} bytes left in the file` : `the limit of ${max} bytes`}`);
    }
    const n = Number(length);
    if (n > CHUNK) {
      // Long values (chat templates) are read in one piece; still bounded by the file size.
      const out = Buffer.alloc(n);
      const { bytesRead } = await this.handle.read(out, 0, n, this.pos);
      if (bytesRead < n) throw new GgufReadError(field, this.pos, "the file was truncated while reading");
      this.pos += n;
      return out.toString("utf8");
    }
    const at = await this.need(n, field);
    this.pos += n;
    return this.buf.toString("utf8", at, at + n);
  }

  /** Skips a string without decoding it. */
  async skipString(field: string): Promise<void> {
    const start = this.pos;
    const length = await this.u64(field);
    if (length > BigInt(this.remaining)) {
      throw new GgufReadError(field, start, `string length ${length} exceeds the ${this.remaining} bytes left in the file`);
    }
    this.pos += Number(length);
  }

  skip(n: number, field: string): void {
    if (n > this.remaining) throw new GgufReadError(field, this.pos, `needs ${n} bytes but the file ends ${this.remaining} bytes later`);
    this.pos += n;
  }
}

function valueType(id: number, field: string, offset: number): GgufValueType {
  const type = GGUF_VALUE_TYPES[id];
  if (type === undefined) throw new GgufReadError(field, offset, `unknown value type ${id} (known: 0 to ${GGUF_VALUE_TYPES.length - 1})`);
  return type;
}

async function readValue(r: BoundedReader, key: string): Promise<GgufValue> {
  const typeAt = r.pos;
  const type = valueType(await r.u32(`type of metadata key "${key}"`), `type of metadata key "${key}"`, typeAt);
  if (type === "string") return { type, value: await r.string(`metadata key "${key}"`) };
  if (type !== "array") return r.scalar(type, `metadata key "${key}"`);

  const elementAt = r.pos;
  const field = `element type of metadata array "${key}"`;
  const elementType = valueType(await r.u32(field), field, elementAt);
  if (elementType === "array") throw new GgufReadError(field, elementAt, "arrays of arrays are not supported");
  const lengthAt = r.pos;
  const length = await r.u64(`length of metadata array "${key}"`);
  // Every element takes at least one byte (a string at least eight), so the file bounds the length.
  const minSize = BigInt(elementType === "string" ? 8 : (FIXED_SIZES[elementType] as number));
  if (length * minSize > BigInt(r.remaining)) {
    throw new GgufReadError(`length of metadata array "${key}"`, lengthAt,
      `${length} elements of ${elementType} need at least ${length * minSize} bytes, but only ${r.remaining} are left in the file`);
  }
  const n = Number(length);
  if (elementType === "string") {
    for (let i = 0; i < n; i++) await r.skipString(`element ${i} of metadata array "${key}"`);
    return { type, elementType, length: n };
  }
  if (n > KEEP_NUMBERS_MAX) {
    r.skip(n * Number(minSize), `metadata array "${key}"`);
    return { type, elementType, length: n };
  }
  const numbers: number[] = [];
  for (let i = 0; i < n; i++) {
    const v = await r.scalar(elementType, `element ${i} of metadata array "${key}"`);
    numbers.push(Number((v as { value: number | bigint }).value));
  }
  return { type, elementType, length: n, numbers };
}

/**
 * Reads the GGUF header of `file` with bounded reads.
 * @throws GgufReadError naming the field that is malformed
 */
export async function readGgufHeader(file: string): Promise<GgufHeader> {
  const handle = await open(file, "r");
  try {
    const { size } = await handle.stat();
    const r = new BoundedReader(handle, size);
    if (size < 4) throw new GgufReadError("magic", 0, size === 0 ? "the file is empty" : `the file has only ${size} bytes`);
    const magicBuf = Buffer.alloc(4);
    await handle.read(magicBuf, 0, 4, 0);
    const magic = magicBuf.toString("latin1");
    if (magic !== "GGUF") throw new GgufReadError("magic", 0, `expected "GGUF", got ${JSON.stringify(magic)} (not a GGUF file)`);
    r.pos = 4;
    const version = await r.u32("version");
    if (version !== 2 && version !== 3) throw new GgufReadError("version", 4, `GGUF version ${version} is not supported (2 or 3)`);
    const tensorCount = await r.u64("tensor_count");
    const kvCount = await r.u64("kv_count");
    // Smallest metadata entry: empty key (8) + type (4) + one byte; smallest tensor info: 8+4+8+4+8.
    if (tensorCount * 32n > BigInt(r.remaining)) {
      throw new GgufReadError("tensor_count", 8, `${tensorCount} tensors cannot fit in the ${r.remaining} bytes left in the file`);
    }
    if (kvCount * 13n > BigInt(r.remaining)) {
      throw new GgufReadError("kv_count", 16, `${kvCount} metadata entries cannot fit in the ${r.remaining} bytes left in the file`);
    }

    const metadata = new Map<string, GgufKv>();
    for (let i = 0; i < Number(kvCount); i++) {
      const offset = r.pos;
      const key = await r.string(`key of metadata entry ${i}`, MAX_NAME_BYTES);
      if (key.length === 0) throw new GgufReadError(`key of metadata entry ${i}`, offset, "empty key");
      if (metadata.has(key)) throw new GgufReadError(`metadata key "${key}"`, offset, "appears twice");
      metadata.set(key, { key, offset, value: await readValue(r, key) });
    }

    const tensors: GgufTensorInfo[] = [];
    for (let i = 0; i < Number(tensorCount); i++) {
      const offset = r.pos;
      const name = await r.string(`name of tensor ${i}`, MAX_NAME_BYTES);
      const nDimsAt = r.pos;
      const nDims = await r.u32(`n_dims of tensor "${name}"`);
      if (nDims < 1 || nDims > 4) throw new GgufReadError(`n_dims of tensor "${name}"`, nDimsAt, `${nDims} is outside 1 to 4`);
      const dims: bigint[] = [];
      for (let d = 0; d < nDims; d++) dims.push(await r.u64(`dimension ${d} of tensor "${name}"`));
      const ggmlType = await r.u32(`type of tensor "${name}"`);
      const dataOffset = await r.u64(`data offset of tensor "${name}"`);
      tensors.push({ name, offset, dims, ggmlType, dataOffset });
    }
    return { version, fileSize: size, metadata, tensors, headerEnd: r.pos };
  } finally {
    await handle.close();
  }
}

/** A ModelFormatError for `file` from a read or validation problem. */
export function ggufFormatError(shownPath: string, error: GgufReadError): ModelFormatError {
  return new ModelFormatError(`Cannot load GGUF model ${shownPath}: ${error.message}`);
}
