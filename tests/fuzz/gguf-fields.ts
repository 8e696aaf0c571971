/**
 * Every little-endian field of a (well-formed) GGUF file's header, with its offset and width, so a
 * test can set one field to one value. Deliberately independent of lib/gguf/read.ts: the fuzzer must
 * not share the parser it attacks.
 */

export type FieldKind = "uint" | "int" | "float";

export interface GgufField {
  /** e.g. `kv_count`, `llama.block_count`, `tensor token_embd.weight type`, `tokenizer.ggml.scores element type`. */
  name: string;
  offset: number;
  width: 1 | 2 | 4 | 8;
  kind: FieldKind;
}

const SCALARS: Record<number, [1 | 2 | 4 | 8, FieldKind]> = {
  0: [1, "uint"], 1: [1, "int"], 2: [2, "uint"], 3: [2, "int"], 4: [4, "uint"], 5: [4, "int"], 6: [4, "float"],
  7: [1, "uint"], 10: [8, "uint"], 11: [8, "int"], 12: [8, "float"],
};

/** Lists the fields of `buf`. Array elements are listed only for the first and last few entries. */
export function ggufFields(buf: Buffer): GgufField[] {
  const fields: GgufField[] = [];
  let pos = 4;
  const field = (name: string, width: 1 | 2 | 4 | 8, kind: FieldKind = "uint") => {
    fields.push({ name, offset: pos, width, kind });
    pos += width;
  };
  const u32 = () => buf.readUInt32LE(pos);
  const u64 = () => Number(buf.readBigUInt64LE(pos));
  const string = (name: string): string => {
    const n = u64();
    field(`${name} length`, 8);
    const s = buf.toString("utf8", pos, pos + n);
    pos += n;
    return s;
  };
  field("version", 4);
  const tensorCount = u64();
  field("tensor_count", 8);
  const kvCount = u64();
  field("kv_count", 8);
  for (let i = 0; i < kvCount; i++) {
    const key = string(`key ${i}`);
    const type = u32();
    field(`${key} type`, 4);
    if (type === 8) string(key);
    else if (type === 9) {
      const elementType = u32();
      field(`${key} element type`, 4);
      const n = u64();
      field(`${key} array length`, 8);
      for (let j = 0; j < n; j++) {
        const listed = j < 3 || j >= n - 2;
        if (elementType === 8) {
          const len = u64();
          if (listed) fields.push({ name: `${key}[${j}] length`, offset: pos, width: 8, kind: "uint" });
          pos += 8 + len;
        } else {
          const [width, kind] = SCALARS[elementType]!;
          if (listed) fields.push({ name: `${key}[${j}]`, offset: pos, width, kind });
          pos += width;
        }
      }
    } else {
      const [width, kind] = SCALARS[type]!;
      field(key, width, kind);
    }
  }
  for (let i = 0; i < tensorCount; i++) {
    const name = string(`tensor ${i} name`);
    const nDims = u32();
    field(`tensor ${name} n_dims`, 4);
    for (let d = 0; d < nDims; d++) field(`tensor ${name} dim ${d}`, 8);
    field(`tensor ${name} type`, 4);
    field(`tensor ${name} offset`, 8);
  }
  return fields;
}

/** The field named `name`; throws when absent (a test's typo, not a fuzz event). */
export function fieldNamed(fields: GgufField[], name: string): GgufField {
  const f = fields.find((x) => x.name === name);
  if (!f) throw new Error(`no GGUF field "${name}"`);
  return f;
}

/** A copy of `buf` with `field` set to `value` (a number, bigint, or NaN/Infinity for floats). */
export function withField(buf: Buffer, field: GgufField, value: number | bigint): Buffer {
  const out = Buffer.from(buf);
  const at = field.offset;
  if (field.kind === "float") {
    if (field.width === 4) out.writeFloatLE(Number(value), at);
    else out.writeDoubleLE(Number(value), at);
    return out;
  }
  const bits = BigInt(field.width * 8);
  const v = BigInt.asUintN(Number(bits), BigInt(typeof value === "number" ? Math.trunc(value) : value));
  for (let i = 0; i < field.width; i++) out[at + i] = Number((v >> BigInt(8 * i)) & 0xffn);
  return out;
}

/** The value `field` holds in `buf`. */
export function fieldValue(buf: Buffer, field: GgufField): number | bigint {
  const at = field.offset;
  if (field.kind === "float") return field.width === 4 ? buf.readFloatLE(at) : buf.readDoubleLE(at);
  let v = 0n;
  for (let i = field.width - 1; i >= 0; i--) v = (v << 8n) | BigInt(buf[at + i]!);
  return field.kind === "int" ? BigInt.asIntN(field.width * 8, v) : v;
}
