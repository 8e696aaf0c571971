/**
 * Synthetic benchmark models (bench/synthetic): SmolLM2-135M shapes at reduced depth (2 of 30
 * layers, every other shape exact) written in every format, then loaded by both engines.
 *
 * The f16 GGUF and the f16 MLX directory come from the same seed, so both engines must compute the
 * same logits. Position 0 is blind to the RoPE layout (rotation by 0 is the identity and a token
 * only attends to itself), so every position is compared, and a GGUF written without
 * convert_hf_to_gguf's Q/K permutation must disagree from position 1 on: that proves the check
 * would catch a wrong layout. An independent float32 TypeScript forward pass is the referee.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getLlama, LlamaLogLevel, readGgufFileInfo, type Llama, type Token } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeGgufModel, type GgufDtype } from "../bench/synthetic/gguf-writer.js";
import { writeMlxModel, type MlxDtype } from "../bench/synthetic/mlx-writer.js";
import { getShape, parameterCount } from "../bench/synthetic/shapes.js";
import { sharedModelsDir } from "../bench/synthetic/vocab.js";
import { GgufBackend, TINY_MODEL_BYTES } from "../lib/backends/gguf.js";
import { MlxBackend } from "../lib/backends/mlx.js";
import { Tokenizer } from "../lib/tokenizer.js";
import { loadReferenceModel } from "./reference/model.js";
import { mlxAvailable } from "./support/mlx.js";

// Every GGUF file here is written by this file itself: skip the load probe (a second load of each,
// up to 650 MB, in a child process), as a caller who trusts their files may (lib/backends/gguf/probe.ts).
process.env.MLX_NODE_GGUF_PROBE = "0";

const SEED = 7;
const shape = getShape("smollm2-135m", 2);
const VOCAB = shape.vocab;
const scratch = mkdtempSync(join(tmpdir(), "mlx-node-synthetic-"));
const gguf = (d: GgufDtype | "f16-unpermuted"): string => join(scratch, `smollm2-L2-${d}.gguf`);
const mlxDir = (d: MlxDtype | "float16-sharded"): string => join(scratch, `smollm2-L2-mlx-${d}`);
/** "Hello world, how are you?" with BOS, as both tokenizers encode it (checked below). */
const IDS = [48896, 9906, 1917, 11, 1268, 527, 499, 30];

let llama: Llama | undefined;
async function ggufLogits(path: string, ids = IDS): Promise<Float32Array[]> {
  llama ??= await getLlama({ gpu: false, build: "never", skipDownload: true, progressLogs: false, maxThreads: 0, logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
  try {
    const context = await model.createContext({ contextSize: 256, threads: 1, sequences: 1 });
    try {
      const out = await context.getSequence().controlledEvaluate(ids.map((id) => [id as Token, { generateNext: { logits: true } }]));
      return out.map((r) => {
        const row = new Float32Array(VOCAB).fill(NaN);
        for (const [token, logit] of r!.next.logits!) row[token] = logit;
        return row;
      });
    } finally {
      await context.dispose();
    }
  } finally {
    await model.dispose();
  }
}

async function mlxLogits(dir: string, ids = IDS): Promise<Float32Array[]> {
  const mlx = new MlxBackend();
  await mlx.load(dir);
  try {
    return (await mlx.logits(ids)).map((row) => Float32Array.from(row));
  } finally {
    await mlx.unload();
  }
}

/** Largest absolute difference and Pearson correlation of two logit rows. */
function compare(a: Float32Array, b: Float32Array): { maxDiff: number; r: number } {
  let maxDiff = 0, sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
  const n = a.length;
  for (let i = 0; i < n; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
    sa += a[i]; sb += b[i]; saa += a[i] * a[i]; sbb += b[i] * b[i]; sab += a[i] * b[i];
  }
  const cov = sab / n - (sa / n) * (sb / n);
  return { maxDiff, r: cov / Math.sqrt((saa / n - (sa / n) ** 2) * (sbb / n - (sb / n) ** 2)) };
}

const fmt = (rows: { maxDiff: number; r: number }[]): string => rows.map((c, p) => `p${p} ${c.maxDiff.toFixed(4)}/${c.r.toFixed(5)}`).join("  ");

beforeAll(() => {
  const t = performance.now();
  const common = { shape, seed: SEED, tokenizer: "llama3" };
  for (const dtype of ["f16", "q8_0", "q4_0"] as const) writeGgufModel(gguf(dtype), { ...common, dtype });
  writeGgufModel(gguf("f16-unpermuted"), { ...common, dtype: "f16", permuteQK: false });
  for (const dtype of ["float16", "q4"] as const) writeMlxModel(mlxDir(dtype), { ...common, dtype });
  writeMlxModel(mlxDir("float16-sharded"), { ...common, dtype: "float16", maxShardBytes: 24 * 2 ** 20 });
  console.log(`[synthetic] wrote 8 models (${(parameterCount(shape) / 1e6).toFixed(1)}M parameters each) in ${((performance.now() - t) / 1000).toFixed(1)} s`);
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("synthetic GGUF files", () => {
  it.each(["f16", "q8_0", "q4_0"] as const)("%s: node-llama-cpp reads the llama architecture, shapes and tokenizer", async (dtype) => {
    const info = await readGgufFileInfo(gguf(dtype), { logWarnings: false });
    expect(info.version).toBe(3);
    expect(info.metadata.general.architecture).toBe("llama");
    const a = info.architectureMetadata;
    expect([a.context_length, a.embedding_length, a.block_count, a.feed_forward_length]).toEqual([8192, 576, 2, 1536]);
    expect([a.attention?.head_count, a.attention?.head_count_kv, a.rope?.dimension_count]).toEqual([9, 3, 64]);
    expect(a.rope?.freq_base).toBe(100000);
    expect(a.attention?.layer_norm_rms_epsilon).toBeCloseTo(1e-5, 10);
    const tok = info.metadata.tokenizer!.ggml!;
    expect([tok.model, tok.pre, tok.tokens.length, tok.bos_token_id, tok.eos_token_id]).toEqual(["gpt2", "llama-bpe", VOCAB, 48896, 48905]);
    const tensors = new Map(info.fullTensorInfo!.map((t) => [t.name, t]));
    expect(tensors.size).toBe(2 + 2 * 9); // embedding, output norm, 9 per layer; tied: no output.weight
    const dims = (name: string): number[] => tensors.get(name)!.dimensions.map(Number);
    expect(dims("token_embd.weight")).toEqual([576, VOCAB]);
    expect(dims("blk.1.attn_q.weight")).toEqual([576, 576]);
    expect(dims("blk.1.attn_k.weight")).toEqual([576, 192]);
    expect(dims("blk.1.ffn_down.weight")).toEqual([1536, 576]);
    expect(dims("output_norm.weight")).toEqual([576]);
    const type = (name: string): number => tensors.get(name)!.ggmlType;
    const matrix = { f16: 1, q8_0: 8, q4_0: 2 }[dtype];
    expect([type("blk.0.attn_q.weight"), type("blk.1.ffn_up.weight"), type("blk.0.attn_norm.weight")]).toEqual([matrix, matrix, 0]);
    // llama-quantize keeps the (tied) output matrix at Q8_0 when its rows are not a multiple of 256.
    expect(type("token_embd.weight")).toBe(dtype === "f16" ? 1 : 8);
  });

  it.each(["f16", "q8_0", "q4_0"] as const)("%s: loads in GgufBackend (1 thread) and generates 8 tokens", async (dtype) => {
    const backend = new GgufBackend();
    await backend.load(gguf(dtype), { threads: 1 });
    try {
      expect(backend.tokenize("Hello world, how are you?", { addSpecialTokens: true })).toEqual(IDS);
      const result = await backend.generate(IDS, { maxTokens: 8, temperature: 0, ignoreEos: true });
      console.log(`[synthetic ${dtype}.gguf] ${result.tokens.length} tokens at ${result.timings.generatedTokensPerSecond.toFixed(0)} tok/s: ${JSON.stringify(result.text)}`);
      expect(result.tokens).toHaveLength(8);
      expect(result.tokens.every((t) => t >= 0 && t < VOCAB)).toBe(true);
    } finally {
      await backend.unload();
    }
  });

  it("q8_0 with default threads: times the first tokens on 1 thread and on every core, keeps the faster, same tokens as 1 thread", async () => {
    const backend = new GgufBackend();
    await backend.load(gguf("q8_0"));
    const single = new GgufBackend();
    await single.load(gguf("q8_0"), { threads: 1 });
    try {
      const cores = backend.threadCounts.prefill;
      expect(statSync(gguf("q8_0")).size).toBeGreaterThan(TINY_MODEL_BYTES);
      expect(backend.decodeThreadsMeasured).toBe(cores === 1); // one core: nothing to choose
      expect(single.decodeThreadsMeasured).toBe(true); // threads given: nothing measured
      const tuned = await backend.generate(IDS, { maxTokens: 80, temperature: 0, ignoreEos: true });
      expect(backend.decodeThreadsMeasured).toBe(true);
      expect([1, cores]).toContain(backend.threadCount);
      // llama.cpp splits a matmul's rows between threads, so the count does not change the math.
      expect(tuned.tokens).toEqual((await single.generate(IDS, { maxTokens: 80, temperature: 0, ignoreEos: true })).tokens);
      await backend.generate(IDS, { maxTokens: 8, temperature: 0, ignoreEos: true });
      // Prompt batches stay on every core, unless more threads stalled at decode (a busy machine):
      // then they run on decode's count too. As llama.cpp reports.
      const prefill = backend.threadCounts.prefill;
      expect(prefill === cores || prefill === backend.threadCount).toBe(true);
      expect(backend.lastRequestThreads).toEqual({ prefill, decode: backend.threadCount });
      console.log(`[synthetic q8_0.gguf] decode threads chosen: ${backend.threadCount} of [1, ${cores}]; ${tuned.timings.generatedTokensPerSecond.toFixed(0)} tok/s while measuring`);
      // Loading the same file again in this process keeps the measured count.
      const chosen = backend.threadCounts;
      await backend.unload();
      await backend.load(gguf("q8_0"));
      expect(backend.decodeThreadsMeasured).toBe(true);
      expect(backend.threadCounts).toEqual(chosen);
    } finally {
      await backend.unload();
      await single.unload();
    }
  });

  it("SentencePiece tokenizer (Llama 2, padded to 49,152 ids): tokenizes like its tokenizer.json and generates", async () => {
    const path = join(scratch, "smollm2-L2-q8_0-llama2.gguf");
    writeGgufModel(path, { shape, seed: SEED, tokenizer: "llama2", dtype: "q8_0" });
    const tok = (await readGgufFileInfo(path, { logWarnings: false })).metadata.tokenizer!.ggml!;
    expect([tok.model, tok.tokens.length, tok.scores?.length, tok.tokens[VOCAB - 1]]).toEqual(["llama", VOCAB, VOCAB, `[PAD${VOCAB - 1}]`]);
    const hf = await Tokenizer.fromDirectory(join(sharedModelsDir(), "tokenizers/llama2"));
    const text = "Hello world, how are you? Émoji 🙂 and 12345.";
    const backend = new GgufBackend();
    await backend.load(path, { threads: 1 });
    try {
      const ids = backend.tokenize(text, { addSpecialTokens: true });
      expect(ids).toEqual(hf.encode(text, { addSpecialTokens: true }));
      const result = await backend.generate(ids, { maxTokens: 8, temperature: 0, ignoreEos: true });
      expect(result.tokens).toHaveLength(8);
    } finally {
      await backend.unload();
    }
  });

  it("quantized GGUF logits track the f16 GGUF (Q8_0 and Q4_0 block layouts as ggml reads them)", async () => {
    const f16 = await ggufLogits(gguf("f16"));
    const q8 = (await ggufLogits(gguf("q8_0"))).map((row, p) => compare(f16[p], row));
    const q4 = (await ggufLogits(gguf("q4_0"))).map((row, p) => compare(f16[p], row));
    console.log(`[synthetic] q8_0 vs f16 (max |diff| / r): ${fmt(q8)}\n[synthetic] q4_0 vs f16: ${fmt(q4)}`);
    // A wrong block layout (nibble order, scale sign or offset) gives r near 0.
    for (const c of q8) expect(c.r).toBeGreaterThan(0.999);
    for (const c of q4) expect(c.r).toBeGreaterThan(0.93);
  });
});

describe.skipIf(!mlxAvailable)("synthetic MLX directories", () => {
  it("are laid out as mlx-lm writes them", () => {
    const config = JSON.parse(readFileSync(join(mlxDir("q4"), "config.json"), "utf8")) as Record<string, unknown>;
    expect(config).toMatchObject({ model_type: "llama", hidden_size: 576, num_hidden_layers: 2, num_attention_heads: 9, num_key_value_heads: 3, intermediate_size: 1536, vocab_size: VOCAB, tie_word_embeddings: true, rope_theta: 100000, rms_norm_eps: 1e-5 });
    expect(config.quantization).toEqual({ group_size: 64, bits: 4 });
    expect(Object.keys(config)).toEqual(Object.keys(config).sort());
    const index = JSON.parse(readFileSync(join(mlxDir("q4"), "model.safetensors.index.json"), "utf8")) as { weight_map: Record<string, string> };
    expect(index.weight_map["model.embed_tokens.scales"]).toBe("model.safetensors");
    expect(Object.keys(index.weight_map)).toEqual(Object.keys(index.weight_map).sort());
    // 24 MiB shards: the 54 MiB embedding alone, then everything else (mlx-lm's make_shards rule).
    const shards = readdirSync(mlxDir("float16-sharded")).filter((f) => f.endsWith(".safetensors"));
    expect(shards).toEqual(["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]);
  });

  it.each(["float16", "q4"] as const)("%s: loads in MlxBackend and generates 8 tokens", async (dtype) => {
    const mlx = new MlxBackend();
    await mlx.load(mlxDir(dtype));
    try {
      expect(mlx.info).toMatchObject({ modelType: "llama", vocabSize: VOCAB, numLayers: 2, hiddenSize: 576, quantizationBits: dtype === "q4" ? 4 : 0 });
      expect(mlx.tokenize("Hello world, how are you?", { addSpecialTokens: true })).toEqual(IDS);
      // A short prompt for q4: MLX's CPU quantized matmul in float16 is slow (~1.3 s per token here).
      const result = await mlx.generate(dtype === "q4" ? IDS.slice(0, 2) : IDS, { maxTokens: 8, temperature: 0, ignoreEos: true });
      console.log(`[synthetic mlx ${dtype}] ${result.tokens.length} tokens at ${result.timings.generatedTokensPerSecond.toFixed(1)} tok/s: ${JSON.stringify(result.text)}`);
      expect(result.tokens).toHaveLength(8);
    } finally {
      await mlx.unload();
    }
  });

  it("f16 GGUF and f16 MLX hold the same weights: both engines and the float32 reference agree at every position", async () => {
    const mlx = await mlxLogits(mlxDir("float16"));
    const sharded = await mlxLogits(mlxDir("float16-sharded"));
    const llamaCpp = await ggufLogits(gguf("f16"));
    const unpermuted = await ggufLogits(gguf("f16-unpermuted"));
    const reference = loadReferenceModel(mlxDir("float16")).forward(IDS);
    const engines = llamaCpp.map((row, p) => compare(mlx[p], row));
    const wrongRope = unpermuted.map((row, p) => compare(mlx[p], row));
    const refMlx = mlx.map((row, p) => compare(reference[p], row));
    const refGguf = llamaCpp.map((row, p) => compare(reference[p], row));
    console.log([
      `[synthetic] logits, max |diff| / r per position (logit std ≈ 0.48)`,
      `  MLX f16 vs llama.cpp f16:          ${fmt(engines)}`,
      `  float32 reference vs MLX f16:      ${fmt(refMlx)}`,
      `  float32 reference vs llama.cpp f16: ${fmt(refGguf)}`,
      `  MLX f16 vs GGUF without Q/K permutation: ${fmt(wrongRope)}`,
    ].join("\n"));
    for (let p = 0; p < IDS.length; p++) {
      expect(sharded[p]).toEqual(mlx[p]);
      expect(engines[p].maxDiff).toBeLessThan(0.01);
      expect(refMlx[p].maxDiff).toBeLessThan(0.01);
      expect(refGguf[p].maxDiff).toBeLessThan(0.01);
    }
    // Without the permutation llama.cpp rotates the wrong pairs: equal at position 0 only.
    expect(wrongRope[0].maxDiff).toBeLessThan(0.01);
    for (let p = 2; p < IDS.length; p++) expect(wrongRope[p].maxDiff).toBeGreaterThan(0.05);
  });

  it("MLX q4: the engine reads what the reference dequantizes, and it tracks f16", async () => {
    // Two positions only, for the same reason.
    const ids = IDS.slice(0, 2);
    const engine = await mlxLogits(mlxDir("q4"), ids);
    const reference = loadReferenceModel(mlxDir("q4")).forward(ids);
    const f16 = loadReferenceModel(mlxDir("float16")).forward(ids);
    const read = engine.map((row, p) => compare(reference[p], row));
    const drift = reference.map((row, p) => compare(f16[p], row));
    console.log(`[synthetic] MLX q4 engine vs float32 reference on the dequantized q4 weights: ${fmt(read)}\n[synthetic] q4 vs f16 (reference): ${fmt(drift)}`);
    for (const c of read) expect(c.maxDiff).toBeLessThan(0.02);
    for (const c of drift) expect(c.r).toBeGreaterThan(0.93);
  });
});

// Llama 3 RoPE scaling only shows at long range (20-90 s and 1.7 GB of scratch, removed after).
describe.skipIf(!mlxAvailable)("Llama-3.2-1B shapes (1 layer): llama3 RoPE scaling on MLX", () => {
  it("llama.cpp with rope_freqs.weight decodes like MLX after a 1,500-token prompt; without it, it does not", async () => {
    const wide = getShape("llama3.2-1b", 1);
    const common = { seed: SEED, tokenizer: "llama3" };
    const dir = join(scratch, "llama-1b-L1");
    writeMlxModel(join(dir, "mlx"), { ...common, shape: wide, dtype: "float16" });
    writeGgufModel(join(dir, "freqs.gguf"), { ...common, shape: wide, dtype: "f16" });
    writeGgufModel(join(dir, "plain.gguf"), { ...common, shape: { ...wide, ropeScaling: null }, dtype: "f16" });
    let state = 12345;
    const prompt = [128000, ...Array.from({ length: 1500 }, () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) % 120000)];
    const options = { maxTokens: 6, temperature: 0, ignoreEos: true };
    const mlx = new MlxBackend();
    await mlx.load(join(dir, "mlx"), { contextSize: 2048 });
    const want = (await mlx.generate(prompt, options)).tokens;
    await mlx.unload();
    const got: number[][] = [];
    for (const file of ["freqs.gguf", "plain.gguf"]) {
      const backend = new GgufBackend();
      await backend.load(join(dir, file), { threads: 1, contextSize: 2048 });
      got.push((await backend.generate(prompt, options)).tokens);
      await backend.unload();
    }
    console.log(`[synthetic llama3 rope] MLX ${want}; GGUF with rope_freqs ${got[0]}; without ${got[1]}`);
    expect(got[0]).toEqual(want);
    expect(got[1]).not.toEqual(want);
    rmSync(dir, { recursive: true, force: true });
  });
});
