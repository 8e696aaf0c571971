/**
 * Static checks of a GGUF file before llama.cpp sees it. llama.cpp trusts the file: a zero head
 * count, a NaN epsilon, an unknown tensor type or an absurd layer count ends in a `GGML_ASSERT`
 * abort (the whole process) or in a load that never finishes. Everything that can be decided from
 * the header is decided here, in well under a second and with memory bounded by the file size;
 * what cannot (a combination llama.cpp's graph code rejects with an assert) is left to the load
 * probe in a child process (`probe.ts`).
 */
import { readGgufHeader, GgufReadError, ggufFormatError, type GgufHeader, type GgufKv, type GgufTensorInfo, type GgufValue } from "./read.js";

/**
 * ggml tensor types the bundled llama.cpp knows, as [block size, bytes per block]; removed ids
 * (4, 5, 31–33, 36–38) are absent. Checked against node-llama-cpp's binding in tests/gguf-validate.test.ts.
 */
export const GGML_TYPES: ReadonlyMap<number, readonly [number, number]> = new Map([
  [0, [1, 4]], [1, [1, 2]], [2, [32, 18]], [3, [32, 20]], [6, [32, 22]], [7, [32, 24]], [8, [32, 34]],
  [9, [32, 36]], [10, [256, 84]], [11, [256, 110]], [12, [256, 144]], [13, [256, 176]], [14, [256, 210]],
  [15, [256, 292]], [16, [256, 66]], [17, [256, 74]], [18, [256, 98]], [19, [256, 50]], [20, [32, 18]],
  [21, [256, 110]], [22, [256, 82]], [23, [256, 136]], [24, [1, 1]], [25, [1, 2]], [26, [1, 4]], [27, [1, 8]],
  [28, [1, 8]], [29, [256, 56]], [30, [1, 2]], [34, [256, 54]], [35, [256, 66]], [39, [32, 17]],
  [40, [64, 36]], [41, [128, 18]], [42, [64, 18]],
]);

/** llama.cpp's LLAMA_MAX_LAYERS and LLAMA_MAX_EXPERTS. */
const MAX_LAYERS = 512;
const MAX_EXPERTS = 512;
/** Generous bounds for sizes no real model comes near, so products stay far from 2^53 and from int32 overflow. */
const MAX_WIDTH = 1 << 20;
const MAX_CONTEXT = 1 << 24;
const MAX_TENSOR_NAME = 63;

/** What the checks learned, for the caller's use. */
export interface GgufSummary {
  architecture: string | undefined;
  tensorCount: number;
  vocabSize: number;
  fileSize: number;
}

/**
 * Reads and checks the whole GGUF header of `file`.
 * @param shownPath the path as the user gave it, for messages.
 * @throws ModelFormatError naming the offending field
 */
export async function validateGguf(file: string, shownPath: string = file): Promise<GgufSummary> {
  try {
    const header = await readGgufHeader(file);
    checkTensors(header);
    const architecture = checkHyperParameters(header);
    const vocabSize = checkVocabulary(header);
    return { architecture, tensorCount: header.tensors.length, vocabSize, fileSize: header.fileSize };
  } catch (error) {
    if (error instanceof GgufReadError) throw ggufFormatError(shownPath, error);
    throw error;
  }
}

function fail(kv: GgufKv | undefined, field: string, problem: string): never {
  throw new GgufReadError(field, kv?.offset, problem);
}

/** Unique names, known types, dims ≥ 1 matching the block size, aligned offsets packed inside the data section. */
function checkTensors(header: GgufHeader): void {
  const alignKv = header.metadata.get("general.alignment");
  let alignment = 32;
  if (alignKv) {
    const v = alignKv.value;
    if (v.type !== "u32" || v.value === 0 || (v.value & (v.value - 1)) !== 0) {
      fail(alignKv, 'metadata key "general.alignment"', `must be a u32 power of two, got ${describeValue(v)}`);
    }
    alignment = v.value;
  }
  const dataStart = BigInt(Math.ceil(header.headerEnd / alignment) * alignment);
  const dataSize = BigInt(header.fileSize) - dataStart;
  if (header.tensors.length > 0 && dataSize < 0n) {
    throw new GgufReadError("data section", header.headerEnd, "the file ends before its data section starts");
  }
  const names = new Set<string>();
  const ranges: { begin: bigint; end: bigint; name: string }[] = [];
  for (const t of header.tensors) {
    const where = `tensor "${t.name}"`;
    if (t.name.length === 0) throw new GgufReadError(`name of tensor at byte ${t.offset}`, t.offset, "empty name");
    if (Buffer.byteLength(t.name) > MAX_TENSOR_NAME) throw new GgufReadError(`name of ${where}`, t.offset, `longer than ${MAX_TENSOR_NAME} bytes`);
    if (names.has(t.name)) throw new GgufReadError(`name of ${where}`, t.offset, "appears twice");
    names.add(t.name);
    const type = GGML_TYPES.get(t.ggmlType);
    if (!type) throw new GgufReadError(`type of ${where}`, t.offset, `unknown ggml type ${t.ggmlType}`);
    const [block, blockBytes] = type;
    let elements = 1n;
    for (const [i, d] of t.dims.entries()) {
      if (d < 1n) throw new GgufReadError(`dimension ${i} of ${where}`, t.offset, `${d} (every dimension must be at least 1)`);
      if (d > BigInt(Number.MAX_SAFE_INTEGER)) throw new GgufReadError(`dimension ${i} of ${where}`, t.offset, `${d} is too large`);
      elements *= d;
      if (elements > 1n << 62n) throw new GgufReadError(`dimensions of ${where}`, t.offset, "the element count overflows 64 bits");
    }
    if (t.dims[0]! % BigInt(block) !== 0n) {
      throw new GgufReadError(`dimension 0 of ${where}`, t.offset, `${t.dims[0]} is not a multiple of the block size ${block} of ggml type ${t.ggmlType}`);
    }
    const bytes = (elements / BigInt(block)) * BigInt(blockBytes);
    if (t.dataOffset % BigInt(alignment) !== 0n) {
      throw new GgufReadError(`data offset of ${where}`, t.offset, `${t.dataOffset} is not a multiple of the alignment ${alignment}`);
    }
    if (t.dataOffset + bytes > dataSize) {
      throw new GgufReadError(`data offset of ${where}`, t.offset,
        `its ${bytes} bytes at ${t.dataOffset} end past the ${dataSize}-byte data section (truncated file, or wrong type or shape)`);
    }
    ranges.push({ begin: t.dataOffset, end: t.dataOffset + bytes, name: t.name });
  }
  // Writers (llama.cpp, gguf-py) pack tensors back to back, each padded to the alignment. Holding
  // files to that catches a changed type or shape, which would otherwise read the wrong bytes.
  ranges.sort((a, b) => (a.begin < b.begin ? -1 : a.begin > b.begin ? 1 : 0));
  let expected = 0n;
  let previous: GgufTensorInfo | undefined;
  for (const range of ranges) {
    const t = header.tensors.find((x) => x.name === range.name)!;
    if (range.begin !== expected) {
      // A gap means the tensor before declares fewer bytes than it was written with; an overlap, more.
      const blamed = previous && range.begin > expected ? previous : t;
      throw new GgufReadError(`tensor "${blamed.name}"`, blamed.offset,
        `its type ${blamed.ggmlType} and shape [${blamed.dims.join(", ")}] do not match the data layout ` +
        `(data of "${t.name}" starts at ${range.begin}, expected ${expected}): wrong type, shape or offset, or overlapping tensors`);
    }
    expected = (range.end + BigInt(alignment) - 1n) / BigInt(alignment) * BigInt(alignment);
    previous = t;
  }
  // The last tensor ends the file (at most padded to the alignment): more bytes mean it was shrunk.
  if (previous && dataSize > expected) {
    throw new GgufReadError(`tensor "${previous.name}"`, previous.offset,
      `its type ${previous.ggmlType} and shape [${previous.dims.join(", ")}] end ${dataSize - ranges[ranges.length - 1]!.end} bytes before the file does: wrong type or shape`);
  }
}

/** The integer value(s) of a key: a scalar, or a per-layer array. */
function integers(kv: GgufKv, field: string): number[] {
  const v = kv.value;
  if (v.type === "array") {
    if (!v.numbers || !isIntegerType(v.elementType)) fail(kv, field, `expected integers, got ${describeValue(v)}`);
    return v.numbers;
  }
  if (!isIntegerType(v.type)) fail(kv, field, `expected an integer, got ${describeValue(v)}`);
  return [Number(v.value as number | bigint)];
}

function isIntegerType(type: string): boolean {
  return ["u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64"].includes(type);
}

function checkRange(kv: GgufKv | undefined, field: string, min: number, max: number, required: boolean): number[] | undefined {
  if (!kv) {
    if (required) throw new GgufReadError(field, undefined, "is missing");
    return undefined;
  }
  const values = integers(kv, field);
  for (const n of values) {
    if (!(n >= min && n <= max)) fail(kv, field, `${n} is outside ${min} to ${max}`);
  }
  return values;
}

/**
 * The hyper-parameters llama.cpp reads: present when required, integers in range, floats finite,
 * heads dividing the width. Only for files with tensors (a vocab-only file has no model to build).
 */
function checkHyperParameters(header: GgufHeader): string | undefined {
  const archKv = header.metadata.get("general.architecture");
  if (!archKv) {
    if (header.tensors.length === 0) return undefined;
    throw new GgufReadError('metadata key "general.architecture"', undefined, "is missing");
  }
  if (archKv.value.type !== "string" || !/^[a-z0-9_.-]{1,64}$/i.test(archKv.value.value)) {
    fail(archKv, 'metadata key "general.architecture"', `expected a short architecture name, got ${describeValue(archKv.value)}`);
  }
  const arch = archKv.value.value;
  const get = (name: string) => header.metadata.get(`${arch}.${name}`);
  const field = (name: string) => `metadata key "${arch}.${name}"`;

  // Every float under the architecture's keys must be finite (epsilons, rope bases, soft-caps, scales).
  for (const kv of header.metadata.values()) {
    if (!kv.key.startsWith(`${arch}.`)) continue;
    const v = kv.value;
    const floats = v.type === "f32" || v.type === "f64" ? [v.value] : v.type === "array" && (v.elementType === "f32" || v.elementType === "f64") ? v.numbers ?? [] : [];
    for (const x of floats) if (!Number.isFinite(x)) fail(kv, `metadata key "${kv.key}"`, `${x} is not a finite number`);
  }
  // A file with no key of its architecture names one llama.cpp may not know: llama.cpp reports that
  // itself, before reading any hyper-parameter (in the probe, then as UnsupportedArchitectureError).
  const hasArchKeys = [...header.metadata.keys()].some((k) => k.startsWith(`${arch}.`));
  if (header.tensors.length === 0 || !hasArchKeys) return arch;

  const layers = checkRange(get("block_count"), field("block_count"), 1, MAX_LAYERS, true)![0]!;
  // llama.cpp requires every layer's tensors: a block count beyond the blk.N tensors present is a lie.
  let maxBlock = -1;
  for (const t of header.tensors) {
    const m = /^blk\.(\d+)\./.exec(t.name);
    if (m) maxBlock = Math.max(maxBlock, Number(m[1]));
  }
  const splitKv = header.metadata.get("split.count");
  const split = splitKv !== undefined && splitKv.value.type === "u16" && splitKv.value.value > 1; // other files hold other layers
  if (!split && maxBlock >= 0 && layers > maxBlock + 1) {
    fail(get("block_count"), field("block_count"), `${layers} layers, but the file has tensors for ${maxBlock + 1}`);
  }
  checkRange(get("context_length"), field("context_length"), 1, MAX_CONTEXT, true);
  const width = checkRange(get("embedding_length"), field("embedding_length"), 1, MAX_WIDTH, true)![0]!;
  const perLayer = (name: string, min: number, max: number) => {
    const values = checkRange(get(name), field(name), min, max, false);
    if (values && values.length !== 1 && values.length !== layers) {
      fail(get(name), field(name), `has ${values.length} per-layer values for ${layers} layers`);
    }
    return values;
  };
  perLayer("feed_forward_length", 1, MAX_WIDTH);
  const heads = perLayer("attention.head_count", 1, MAX_WIDTH);
  const kvHeads = perLayer("attention.head_count_kv", 1, MAX_WIDTH);
  const keyLength = checkRange(get("attention.key_length"), field("attention.key_length"), 1, 1 << 16, false);
  checkRange(get("attention.value_length"), field("attention.value_length"), 1, 1 << 16, false);
  checkRange(get("rope.dimension_count"), field("rope.dimension_count"), 1, MAX_WIDTH, false);
  checkRange(get("vocab_size"), field("vocab_size"), 1, 1 << 24, false);
  const experts = checkRange(get("expert_count"), field("expert_count"), 0, MAX_EXPERTS, false)?.[0] ?? 0;
  checkRange(get("expert_used_count"), field("expert_used_count"), experts > 0 ? 1 : 0, experts, false);
  if (heads) {
    for (const [i, h] of heads.entries()) {
      const kvh = kvHeads?.[kvHeads.length === 1 ? 0 : i] ?? h;
      if (h % kvh !== 0) fail(get("attention.head_count_kv"), field("attention.head_count_kv"), `${kvh} does not divide the head count ${h}`);
      if (!keyLength && width % h !== 0) fail(get("attention.head_count"), field("attention.head_count"), `${h} does not divide embedding_length ${width}`);
    }
  }
  const float = (name: string, ok: (x: number) => boolean, expected: string) => {
    const kv = get(name);
    if (!kv) return;
    const v = kv.value;
    if (!((v.type === "f32" || v.type === "f64") && ok(v.value))) fail(kv, field(name), `expected ${expected}, got ${describeValue(v)}`);
  };
  float("attention.layer_norm_rms_epsilon", (x) => x > 0 && x < 1, "a float in (0, 1)");
  float("attention.layer_norm_epsilon", (x) => x > 0 && x < 1, "a float in (0, 1)");
  float("rope.freq_base", (x) => x > 0, "a positive float");
  float("rope.scaling.factor", (x) => x > 0, "a positive float");
  return arch;
}

/** Tokenizer arrays: tokens are strings, scores floats, token types small integers, all of one length. */
function checkVocabulary(header: GgufHeader): number {
  const tokens = header.metadata.get("tokenizer.ggml.tokens");
  const modelKv = header.metadata.get("tokenizer.ggml.model");
  if (modelKv && modelKv.value.type !== "string") fail(modelKv, 'metadata key "tokenizer.ggml.model"', `expected a string, got ${describeValue(modelKv.value)}`);
  if (!tokens) {
    const model = modelKv?.value.type === "string" ? modelKv.value.value : undefined;
    if (model !== undefined && model !== "none" && model !== "no_vocab") {
      throw new GgufReadError('metadata key "tokenizer.ggml.tokens"', undefined, `is missing (tokenizer.ggml.model is "${model}")`);
    }
    return 0;
  }
  const t = tokens.value;
  if (t.type !== "array" || t.elementType !== "string" || t.length === 0) {
    fail(tokens, 'metadata key "tokenizer.ggml.tokens"', `expected a non-empty array of strings, got ${describeValue(t)}`);
  }
  const n = t.length;
  const expect = (key: string, types: string[]) => {
    const kv = header.metadata.get(key);
    if (!kv) return;
    const v = kv.value;
    if (v.type !== "array" || !types.includes(v.elementType)) fail(kv, `metadata key "${key}"`, `expected an array of ${types.join(" or ")}, got ${describeValue(v)}`);
    if (v.length !== n) fail(kv, `metadata key "${key}"`, `has ${v.length} entries for ${n} tokens`);
    return v;
  };
  expect("tokenizer.ggml.scores", ["f32"]);
  const types = expect("tokenizer.ggml.token_type", ["i32"]);
  for (const x of types?.numbers ?? []) {
    if (x < 0 || x > 6) fail(header.metadata.get("tokenizer.ggml.token_type"), 'metadata key "tokenizer.ggml.token_type"', `token type ${x} is outside 0 to 6`);
  }
  const merges = header.metadata.get("tokenizer.ggml.merges");
  if (merges && (merges.value.type !== "array" || merges.value.elementType !== "string")) {
    fail(merges, 'metadata key "tokenizer.ggml.merges"', `expected an array of strings, got ${describeValue(merges.value)}`);
  }
  return n;
}

function describeValue(v: GgufValue): string {
  if (v.type === "array") return `an array of ${v.length} ${v.elementType}`;
  if (v.type === "string") return `the string ${JSON.stringify(v.value.length > 40 ? v.value.slice(0, 40) + "…" : v.value)}`;
  return `${v.type} ${v.value}`;
}
