// Validates the plain-TS reference (tests/reference/) against real checkpoints, so it can
// in turn be trusted as ground truth for the native MLX engine.
import { mkdtempSync, readFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  bf16BitsToF32,
  f16BitsToF32,
  f32ToBF16Bits,
  f32ToF16Bits,
  readSafetensors,
  readSafetensorsHeader,
  roundTo,
  writeCorruptSafetensors,
  writeSafetensors,
  type CorruptionKind,
} from "./reference/safetensors.js";
import { dequantize, quantize, unpack } from "./reference/quantize.js";
import { loadReferenceModel, parseConfig, ropeInvFreq, type Family } from "./reference/model.js";
import { TINY_VOCAB, makeRng, writeTinyModel } from "./reference/tiny-models.js";

const MODELS = join(import.meta.dirname, "..", "..", "shared", "models", "stories260K");
const tmp = mkdtempSync(join(tmpdir(), "mlx-node-ref-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const maxAbsDiff = (a: Float32Array, b: Float32Array): number => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
/** Count of differing elements (Object.is, so NaN/-0 count); far faster than toEqual on big arrays. */
const mismatches = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  if (a.length !== b.length) return Math.max(a.length, b.length);
  let n = 0;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) n++;
  return n;
};

describe("safetensors", () => {
  it("round-trips every dtype with metadata and an 8-byte aligned header", () => {
    const rng = makeRng(7);
    const f = Float32Array.from({ length: 24 }, () => rng.normal() * 100);
    const p = join(tmp, "rt.safetensors");
    writeSafetensors(
      p,
      {
        a: { dtype: "F32", shape: [4, 6], data: f },
        b: { dtype: "F16", shape: [24], data: f },
        c: { dtype: "BF16", shape: [2, 12], data: f },
        d: { dtype: "U32", shape: [3], data: Uint32Array.of(0, 0xdeadbeef, 0xffffffff) },
        e: { dtype: "I32", shape: [2], data: Int32Array.of(-5, 2 ** 31 - 1) },
        raw: { dtype: "F16", shape: [2], data: Uint16Array.of(0x3c00, 0xc000) },
      },
      { format: "mlx", note: "x" },
    );
    const h = readSafetensorsHeader(p);
    expect(h.headerLength % 8).toBe(0);
    expect(h.metadata).toEqual({ format: "mlx", note: "x" });
    const t = readSafetensors(p);
    expect(t.a.data).toEqual(f);
    expect(t.a.shape).toEqual([4, 6]);
    expect(t.b.data).toEqual(roundTo(f, "float16"));
    expect(t.c.data).toEqual(roundTo(f, "bfloat16"));
    expect(t.c.shape).toEqual([2, 12]);
    expect([...t.d.data]).toEqual([0, 0xdeadbeef, 0xffffffff]);
    expect([...t.e.data]).toEqual([-5, 2 ** 31 - 1]);
    expect([...t.raw.data]).toEqual([1, -2]);
  });

  it("converts float16/bfloat16 with round-to-nearest-even and IEEE specials", () => {
    const h = (v: number): number => f16BitsToF32(f32ToF16Bits(v));
    expect(h(1 + 2 ** -11)).toBe(1); // tie -> even mantissa
    expect(h(1 + 3 * 2 ** -11)).toBe(1 + 2 ** -9); // tie -> even (rounds up)
    expect(h(65504)).toBe(65504);
    expect(h(65520)).toBe(Infinity); // halfway to 2^16 rounds to Inf
    expect(h(2 ** -24)).toBe(2 ** -24); // smallest subnormal
    expect(h(2 ** -25)).toBe(0); // tie -> even (zero)
    expect(h(1.5 * 2 ** -25)).toBe(2 ** -24);
    expect(Object.is(h(-0), -0)).toBe(true);
    expect(Number.isNaN(h(NaN))).toBe(true);
    const b = (v: number): number => bf16BitsToF32(f32ToBF16Bits(v));
    expect(b(1 + 2 ** -8)).toBe(1);
    expect(b(1 + 3 * 2 ** -8)).toBe(1 + 2 ** -6);
    expect(b(-Infinity)).toBe(-Infinity);
    expect(Number.isNaN(b(NaN))).toBe(true);
  });

  it("matches real checkpoints: torch bf16 and mlx f16 casts of the f32 weights", () => {
    const f32 = readSafetensors(join(MODELS, "hf-f32/model.safetensors"));
    const bf16 = readSafetensors(join(MODELS, "hf-bf16/model.safetensors"));
    const mlx = readSafetensors(join(MODELS, "mlx-4bit/model.safetensors"));
    for (const [k, v] of Object.entries(f32)) expect(mismatches(bf16[k].data, roundTo(v.data as Float32Array, "bfloat16")), k).toBe(0);
    for (const k of ["model.norm.weight", "model.layers.2.mlp.down_proj.weight"]) {
      expect(mlx[k].dtype).toBe("F16");
      expect(mismatches(mlx[k].data, roundTo(f32[k].data as Float32Array, "float16")), k).toBe(0);
    }
  });

  it.each<CorruptionKind>(["truncated", "header-too-large", "invalid-json", "bad-offsets"])("rejects a %s file", (kind) => {
    const p = join(tmp, `bad-${kind}.safetensors`);
    writeCorruptSafetensors(p, kind);
    expect(() => readSafetensors(p)).toThrow();
  });
});

describe("MLX affine quantization", () => {
  const f32 = readSafetensors(join(MODELS, "hf-f32/model.safetensors"));
  const mlx = readSafetensors(join(MODELS, "mlx-4bit/model.safetensors"));
  const layers = Object.keys(mlx).filter((k) => k.endsWith(".scales")).map((k) => k.slice(0, -".scales".length));

  it("dequantized real mlx-4bit weights are within one step of the f16 weights", () => {
    let worst = 0;
    let worstSteps = 0;
    for (const base of layers) {
      const s = mlx[`${base}.scales`].data as Float32Array;
      const w = dequantize(mlx[`${base}.weight`].data as Uint32Array, s, mlx[`${base}.biases`].data as Float32Array, 64, 4);
      const ref = roundTo(f32[`${base}.weight`].data as Float32Array, "float16");
      for (let i = 0; i < w.length; i++) {
        const err = Math.abs(w[i] - ref[i]);
        worst = Math.max(worst, err);
        worstSteps = Math.max(worstSteps, err / Math.abs(s[(i / 64) | 0]));
      }
    }
    console.log(`[reference] mlx-4bit dequant: ${layers.length} layers, max abs err ${worst.toExponential(3)}, max err ${worstSteps.toFixed(3)} steps`);
    expect(layers.length).toBe(1 + 5 * 6); // embed + q/k/v/o/gate/up per layer; down_proj (172 cols) stays f16
    expect(worstSteps).toBeLessThanOrEqual(1);
  });

  it("re-quantizing the f16 weights reproduces MLX's packed codes, scales and biases", () => {
    let groups = 0;
    let exact = 0;
    let words = 0;
    let exactWords = 0;
    for (const base of layers) {
      const src = f32[`${base}.weight`];
      const [rows, cols] = src.shape;
      const q = quantize(roundTo(src.data as Float32Array, "float16"), rows, cols, 64, 4, "float16");
      const wq = mlx[`${base}.weight`].data as Uint32Array;
      const s = mlx[`${base}.scales`].data as Float32Array;
      const b = mlx[`${base}.biases`].data as Float32Array;
      for (let g = 0; g < s.length; g++) {
        let same = q.scales[g] === s[g] && q.biases[g] === b[g];
        for (let j = 0; j < 8; j++) {
          const ok = q.wq[g * 8 + j] === wq[g * 8 + j];
          exactWords += ok ? 1 : 0;
          same &&= ok;
        }
        words += 8;
        groups++;
        exact += same ? 1 : 0;
      }
    }
    console.log(`[reference] requantize: ${exact}/${groups} groups exact (${((100 * exact) / groups).toFixed(2)}%), ${exactWords}/${words} words`);
    expect(exact / groups).toBeGreaterThanOrEqual(0.99);
  });

  it("packs element 0 into the lowest bits and anchors the larger-magnitude edge", () => {
    // Group of 32: values 0..31 scaled; max has the larger magnitude -> negative scale, bias = max.
    const w = Float32Array.from({ length: 32 }, (_, i) => i / 31);
    const q = quantize(w, 1, 32, 32, 4);
    expect(q.scales[0]).toBeLessThan(0);
    expect(q.biases[0]).toBe(1);
    const codes = unpack(q.wq, 4);
    expect(codes[0]).toBe(15); // w = 0 is the far end from the anchor
    expect(codes[31]).toBe(0);
    expect(q.wq[0] & 0xf).toBe(codes[0]);
    // 8-bit: 4 codes per word; random data reconstructs within half a step.
    const rng = makeRng(3);
    const r = Float32Array.from({ length: 4 * 64 }, () => rng.normal());
    const q8 = quantize(r, 4, 64, 32, 8);
    expect(q8.wq.length).toBe(64);
    const d = dequantize(q8.wq, q8.scales, q8.biases, 32, 8);
    // Not half a step: nudging the scale so the anchor is exact can clip the far end by up to one step.
    for (let i = 0; i < r.length; i++) expect(Math.abs(d[i] - r[i])).toBeLessThanOrEqual(Math.abs(q8.scales[(i / 32) | 0]) * 1.0001);
  });
});

describe("reference forward pass on stories260K", () => {
  const expected = JSON.parse(readFileSync(join(MODELS, "expected/greedy-once-upon-a-time.json"), "utf8")) as Record<string, unknown> & {
    prompt_ids: number[];
  };
  const matches = (a: number[], b: number[]): number => a.filter((t, i) => t === b[i]).length;
  it.each([
    ["hf-f32", "hf-f32_numpy"],
    ["hf-bf16", "hf-bf16_numpy"],
    ["mlx-4bit", "mlx-4bit_numpy"],
  ])("%s greedy matches the expected ids", (variant, key) => {
    const want = (expected[key] as { ids: number[] }).ids;
    const got = loadReferenceModel(join(MODELS, variant)).greedy(expected.prompt_ids, want.length);
    console.log(`[reference] ${variant}: ${matches(got, want)}/${want.length} greedy tokens match ${key}`);
    expect(got).toEqual(want);
  });
});

describe("RoPE frequencies", () => {
  it("llama3 scaling equals mlx-lm's period formulation; linear divides by factor", () => {
    const cfg = { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 };
    const inv = ropeInvFreq(16, 10000, { type: "llama3", ...cfg });
    for (let i = 0; i < 8; i++) {
      // mlx-lm Llama3RoPE: works on periods (1/inv) and divides smoothly instead of blending.
      let period = 10000 ** ((2 * i) / 16);
      const wl = 2 * Math.PI * period;
      const smooth = (8192 / wl - 1) / (4 - 1);
      if (wl > 8192) period *= 8;
      else if (wl > 2048) period = period / ((1 - smooth) / 8 + smooth);
      expect(inv[i]).toBeCloseTo(1 / period, 12);
    }
    expect(inv[7]).toBeCloseTo(1 / (8 * 10000 ** (14 / 16)), 12); // scaled band actually hit
    expect(inv[0]).toBe(1);
    const lin = ropeInvFreq(16, 10000, { type: "linear", ...cfg, factor: 2 });
    expect(lin[3]).toBeCloseTo(10000 ** (-6 / 16) / 2, 14);
    expect(parseConfig({ model_type: "llama", vocab_size: 1, hidden_size: 8, intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 2, rope_scaling: { type: "linear", factor: 2 } }).ropeScaling?.type).toBe("linear");
  });
});

describe("tiny models", () => {
  const families: Family[] = ["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2", "gemma3_text"];
  const prompt = [1, 403, 407, 261, 378];

  it.each(families)("%s: loads, has the right shapes, finite logits, and does not collapse", (family) => {
    const dir = join(tmp, `${family}-plain`);
    const tm = writeTinyModel(dir, { family, dtype: "float16", seed: 11 });
    for (const f of ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]) expect(existsSync(join(dir, f))).toBe(true);
    const m = loadReferenceModel(dir);
    expect(m.config.modelType).toBe(family);
    expect(m.config.headDim).toBe(family === "qwen3" || family.startsWith("gemma") ? 32 : 16);
    const logits = m.forward(prompt);
    expect(logits.length).toBe(prompt.length);
    expect(logits.every((l) => l.length === TINY_VOCAB && l.every(Number.isFinite))).toBe(true);
    const w = readSafetensors(join(dir, "model.safetensors"));
    const qProj = family === "phi3" ? "model.layers.0.self_attn.qkv_proj.weight" : "model.layers.0.self_attn.q_proj.weight";
    expect(w[qProj].dtype).toBe("F16");
    if (family === "phi3") expect(w[qProj].shape).toEqual([(4 + 2 * 2) * 16, 64]); // fused rows [q; k; v]
    expect("model.layers.0.self_attn.q_proj.bias" in w).toBe(family === "qwen2");
    expect(w["model.layers.0.self_attn.q_norm.weight"]?.shape).toEqual(family === "qwen3" || family === "gemma3_text" ? [32] : undefined);
    expect(tm.config.model_type).toBe(family);
    const gen = m.greedy(prompt, 12);
    expect(new Set(gen).size).toBeGreaterThanOrEqual(5);
  });

  it.each(families)("%s: sharded (bf16) gives bit-identical logits to unsharded", (family) => {
    const a = writeTinyModel(join(tmp, `${family}-one`), { family, dtype: "bfloat16", seed: 5 });
    const b = writeTinyModel(join(tmp, `${family}-three`), { family, dtype: "bfloat16", seed: 5, shards: 3 });
    expect(a.files).toEqual(["model.safetensors"]);
    expect(b.files).toEqual(["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors", "model.safetensors.index.json"]);
    const index = JSON.parse(readFileSync(join(b.dir, "model.safetensors.index.json"), "utf8")) as { weight_map: Record<string, string> };
    expect(Object.keys(index.weight_map).length).toBe(Object.keys(readSafetensors(join(a.dir, "model.safetensors"))).length);
    const la = loadReferenceModel(a.dir).forward(prompt);
    const lb = loadReferenceModel(b.dir).forward(prompt);
    expect(lb.length).toBe(la.length);
    la.forEach((l, i) => expect(mismatches(lb[i], l)).toBe(0));
  });

  it("4-bit/64 quantizes every linear and the embedding; tied head uses the quantized embedding", () => {
    const dir = join(tmp, "q4-tied");
    const tm = writeTinyModel(dir, { family: "qwen2", dtype: "float16", seed: 3, quantize: { bits: 4, groupSize: 64 }, tieWordEmbeddings: true });
    expect(tm.unquantized).toEqual([]);
    expect(tm.quantized).toContain("model.layers.2.mlp.down_proj.weight");
    expect(tm.config.quantization).toEqual({ group_size: 64, bits: 4 });
    const w = readSafetensors(join(dir, "model.safetensors"));
    expect("lm_head.weight" in w).toBe(false);
    expect(w["model.embed_tokens.weight"]).toMatchObject({ dtype: "U32", shape: [TINY_VOCAB, 8] });
    expect(w["model.embed_tokens.scales"]).toMatchObject({ dtype: "F16", shape: [TINY_VOCAB, 1] });
    expect(readSafetensorsHeader(join(dir, "model.safetensors")).metadata.format).toBe("mlx");
    const m = loadReferenceModel(dir);
    const emb = m.weights.get("model.embed_tokens.weight")!;
    const deq = dequantize(w["model.embed_tokens.weight"].data as Uint32Array, w["model.embed_tokens.scales"].data as Float32Array, w["model.embed_tokens.biases"].data as Float32Array, 64, 4);
    expect(mismatches(emb.data, deq)).toBe(0);
    // Tied head == embedding: the logit row of a token is h . embed[token].
    expect(m.forward(prompt)[0].every(Number.isFinite)).toBe(true);
  });

  it("non-divisible intermediate size leaves down_proj unquantized; 8-bit stays close to float", () => {
    const opts = { family: "llama" as const, dtype: "float32" as const, seed: 9, intermediateSize: 136 };
    const q = writeTinyModel(join(tmp, "q8-odd"), { ...opts, quantize: { bits: 8, groupSize: 32 } });
    expect(q.unquantized).toEqual([0, 1, 2].map((l) => `model.layers.${l}.mlp.down_proj.weight`));
    const w = readSafetensors(join(q.dir, "model.safetensors"));
    expect(w["model.layers.0.mlp.down_proj.weight"].dtype).toBe("F32");
    expect(w["model.layers.0.mlp.gate_proj.weight"]).toMatchObject({ dtype: "U32", shape: [136, 16] });
    expect(w["lm_head.scales"]).toMatchObject({ dtype: "F32", shape: [TINY_VOCAB, 2] });
    const f = writeTinyModel(join(tmp, "f-odd"), opts);
    const lq = loadReferenceModel(q.dir).forward(prompt);
    const lf = loadReferenceModel(f.dir).forward(prompt);
    // Logits have sd ~2.4; 8-bit weight error (<= 1 step ~0.01) should move them ~1-2% on average.
    const diffs = lq.flatMap((l, i) => Array.from(l, (v, j) => Math.abs(v - lf[i][j])));
    const mean = diffs.reduce((a, b) => a + b, 0) / diffs.length;
    expect(mean).toBeGreaterThan(0);
    expect(mean).toBeLessThan(0.1);
  });

  it("every family x dtype x quant mode loads with finite logits and scales in the model dtype", () => {
    const st = { float32: "F32", float16: "F16", bfloat16: "BF16" } as const;
    for (const family of families)
      for (const dtype of ["float32", "float16", "bfloat16"] as const)
        for (const quant of [undefined, { bits: 4, groupSize: 64 } as const, { bits: 8, groupSize: 32 } as const]) {
          const tm = writeTinyModel(join(tmp, `m-${family}-${dtype}-${quant?.bits ?? 0}`), { family, dtype, seed: 21, quantize: quant, numLayers: 2 });
          const w = readSafetensors(join(tm.dir, "model.safetensors"));
          if (quant) expect(w["model.layers.1.mlp.down_proj.scales"].dtype).toBe(st[dtype]);
          expect(w["model.norm.weight"].dtype).toBe(st[dtype]);
          const l = loadReferenceModel(tm.dir).forward([1, 2, 3]);
          expect(l.every((r) => r.every(Number.isFinite)), `${family} ${dtype} ${quant?.bits}`).toBe(true);
        }
  });

  it("llama3 rope scaling is written to config.json and changes logits after position 0", () => {
    const ropeScaling = { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
    const a = loadReferenceModel(writeTinyModel(join(tmp, "r0"), { family: "llama", dtype: "float32", seed: 4 }).dir);
    const b = loadReferenceModel(writeTinyModel(join(tmp, "r1"), { family: "llama", dtype: "float32", seed: 4, ropeScaling }).dir);
    expect(b.config.ropeScaling?.type).toBe("llama3");
    expect(JSON.parse(readFileSync(join(tmp, "r1/config.json"), "utf8")).rope_scaling).toEqual(ropeScaling);
    const la = a.forward(prompt);
    const lb = b.forward(prompt);
    expect(lb[0]).toEqual(la[0]); // position 0 has no rotation
    expect(maxAbsDiff(la[4], lb[4])).toBeGreaterThan(0);
  });
});
