/**
 * The MLX engine judged by mlx-lm: tiny random checkpoints of every model_type we claim, built, saved
 * (float32/float16/bfloat16, 4-/8-bit with per-layer overrides) and run by mlx-lm itself
 * (tests/python/conformance.py, cached per mlx-lm version). For each, the engine's logits over the
 * 64-token prompt and the 31 positions after it must match mlx-lm's prefill and cached decode, and its
 * greedy continuation must be mlx-lm's, 32 of 32 tokens. Skips, printing why, without MLX or mlx-lm.
 * Missing references are made on the first run (about 30 s); to remake them all:
 *   rm -rf ~/.cache/mlx-node-tests/conformance && npx vitest run tests/mlx-conformance.test.ts
 */
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, it } from "vitest";
import { MlxBackend, type MlxLoadOptions } from "../lib/backends/mlx.js";
import { ModelConfigError, UnsupportedArchitectureError } from "../lib/errors.js";
import { readSafetensorsHeader } from "./reference/safetensors.js";
import { TOKENIZER_SOURCE } from "./reference/tiny-models.js";
import { batchedVersusAlone, expectConcurrentEqualsAlone, idsOfLength } from "./support/batching.js";
import { loadPeaks } from "./support/mlx.js";
import { BOUNDS, defineConformanceSuite, type ConformanceCase as Case } from "./support/conformance-suite.js";

// Bounds, max |logit diff| over all prompt + 31 positions (logits here spread over about ±5):
// - float32 (dense or quantized with float32 scales, the engine's auto dtype on the CPU): 1e-4. The
//   same MLX ops in the same dtype; what differs is summation order (the engine's pre-transposed
//   weights, dequantize-then-matmul for prompt chunks on the CPU, one forward vs mlx-lm's cache).
// - float16 / bfloat16 checkpoints, engine computeDtype = the checkpoint's (mlx-lm computes in the
//   weights' dtype): one rounding of a logit of magnitude ~5 is 2^-11 * 4 ≈ 2e-3 in float16 and
//   2^-8 * 4 ≈ 1.6e-2 in bfloat16; differently ordered sums over 3 layers compound a few of these,
//   so the bounds are 8 such units: float16 1.6e-2, bfloat16 1.25e-1 (measured values are printed).
const { F32, F16, BF16 } = BOUNDS;

const q4 = { bits: 4, group_size: 64 };
const longrope = (pairs: number, originalMax: number) => ({
  type: "longrope",
  short_factor: Array.from({ length: pairs }, (_, i) => 1 + i / pairs),
  long_factor: Array.from({ length: pairs }, (_, i) => 1 + (3 * i) / pairs),
  original_max_position_embeddings: originalMax,
});
const half = (dtype: "float16" | "bfloat16"): MlxLoadOptions => ({ computeDtype: dtype });
const STORIES = (variant: string) => join(TOKENIZER_SOURCE, "..", variant);
// gemma4_text keys beyond conformance.py's COMMON (hidden 64, 4 heads over 2 KV heads); a gemma4
// text_config repeats COMMON's sizes, which conformance.py puts in the outer config.
const GEMMA4 = {
  num_hidden_layers: 4, head_dim: 16, global_head_dim: 32, num_kv_shared_layers: 2, hidden_size_per_layer_input: 32,
  vocab_size_per_layer_input: 512, sliding_window: 8, tie_word_embeddings: true, final_logit_softcapping: 30.0,
  layer_types: ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
};
const GEMMA4_TEXT_CONFIG = { ...GEMMA4, hidden_size: 64, intermediate_size: 128, num_attention_heads: 4, num_key_value_heads: 2, rms_norm_eps: 1e-5 };

const CASES: Case[] = [
  // llama (and mistral, which mlx-lm maps to llama)
  { name: "llama f32 untied, GQA 4:2", spec: { family: "llama", seed: 1 }, bound: F32 },
  {
    name: "llama f32 tied, MHA, attention and MLP biases",
    spec: { family: "llama", seed: 2, config: { tie_word_embeddings: true, num_key_value_heads: 4, attention_bias: true, mlp_bias: true } },
    bound: F32,
  },
  { name: "llama f32 GQA 4:1, head_dim 32 != hidden/heads", spec: { family: "llama", seed: 3, config: { num_key_value_heads: 1, head_dim: 32 } }, bound: F32 },
  {
    name: "llama f32 llama3 rope scaling",
    spec: { family: "llama", seed: 4, config: { rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 32 } } },
    bound: F32,
  },
  { name: "llama f32 rope_traditional (interleaved pairs)", spec: { family: "llama", seed: 43, config: { rope_traditional: true } }, bound: F32 },
  {
    name: "llama f32 yarn rope scaling 4 (original 64)",
    spec: { family: "llama", seed: 49, config: { rope_scaling: { rope_type: "yarn", factor: 4.0, original_max_position_embeddings: 64 } } },
    bound: F32,
  },
  { name: "llama f32 linear rope scaling 4", spec: { family: "llama", seed: 5, config: { rope_scaling: { type: "linear", factor: 4.0 } } }, bound: F32 },
  {
    name: "llama f32 layer_types, sliding window 16 < prompt on layers 0 and 2",
    spec: { family: "llama", seed: 6, config: { sliding_window: 16, layer_types: ["sliding_attention", "full_attention", "sliding_attention"] } },
    bound: F32,
  },
  { name: "llama f16", spec: { family: "llama", seed: 7, dtype: "float16" }, engine: half("float16"), bound: F16 },
  { name: "llama bf16", spec: { family: "llama", seed: 8, dtype: "bfloat16" }, engine: half("bfloat16"), bound: BF16 },
  { name: "llama 4-bit g64", spec: { family: "llama", seed: 9, quantization: q4 }, bound: F32 },
  { name: "llama 8-bit g32, tied (quantized embedding as head)", spec: { family: "llama", seed: 10, config: { tie_word_embeddings: true }, quantization: { bits: 8, group_size: 32 } }, bound: F32 },
  {
    name: "llama 4-bit g32, per-layer overrides (8-bit down_proj, 6-bit lm_head, float v_proj)",
    spec: {
      family: "llama", seed: 11,
      quantization: {
        bits: 4, group_size: 32,
        overrides: { "model.layers.0.mlp.down_proj": { bits: 8, group_size: 64 }, lm_head: { bits: 6, group_size: 64 }, "model.layers.1.self_attn.v_proj": false },
      },
    },
    bound: F32,
  },
  {
    name: "llama 4-bit g64, intermediate 136: down_proj left float (input not a multiple of 64)",
    spec: { family: "llama", seed: 41, config: { intermediate_size: 136 }, quantization: q4 },
    bound: F32,
  },
  { name: "llama mixed_3_6 recipe (3-bit, 6-bit v_proj/down_proj/lm_head), g64", spec: { family: "llama", seed: 44, quantization: { ...q4, recipe: "mixed_3_6" } }, bound: F32 },
  { name: "llama mixed_2_6 recipe, g32, tied", spec: { family: "llama", seed: 45, config: { tie_word_embeddings: true }, quantization: { bits: 2, group_size: 32, recipe: "mixed_2_6" } }, bound: F32 },
  {
    name: "llama f32 700-token prompt (two prefill chunks), layer_types window 16",
    spec: { family: "llama", seed: 46, prompt_length: 700, config: { sliding_window: 16, layer_types: ["full_attention", "sliding_attention", "sliding_attention"] } },
    bound: F32,
  },
  { name: "llama 4-bit g64, float16 scales", spec: { family: "llama", seed: 12, dtype: "float16", quantization: q4 }, engine: half("float16"), bound: F16 },
  { name: "mistral f32 (head_dim 16, theta 1e6, window unused as mlx-lm)", spec: { family: "mistral", seed: 13, config: { sliding_window: 16 } }, bound: F32 },
  // qwen2, qwen3
  { name: "qwen2 f32 tied, q/k/v biases", spec: { family: "qwen2", seed: 14, config: { tie_word_embeddings: true } }, bound: F32 },
  { name: "qwen2 4-bit g64 untied", spec: { family: "qwen2", seed: 15, quantization: q4 }, bound: F32 },
  { name: "qwen2 bf16", spec: { family: "qwen2", seed: 16, dtype: "bfloat16" }, engine: half("bfloat16"), bound: BF16 },
  { name: "qwen3 f32 tied, q/k norms, head_dim 32", spec: { family: "qwen3", seed: 17, config: { tie_word_embeddings: true } }, bound: F32 },
  { name: "qwen3 f16, GQA 4:1", spec: { family: "qwen3", seed: 18, dtype: "float16", config: { num_key_value_heads: 1 } }, engine: half("float16"), bound: F16 },
  {
    name: "qwen3 f32 yarn 4 (as Qwen3's long-context recipe), beta_fast 16",
    spec: { family: "qwen3", seed: 50, config: { rope_scaling: { rope_type: "yarn", factor: 4.0, original_max_position_embeddings: 32, beta_fast: 16 } } },
    bound: F32,
  },
  { name: "qwen2 bf16 yarn 2", spec: { family: "qwen2", seed: 51, dtype: "bfloat16", config: { rope_scaling: { type: "yarn", factor: 2.0, original_max_position_embeddings: 48 } } }, engine: half("bfloat16"), bound: BF16 },
  { name: "qwen3 8-bit g64", spec: { family: "qwen3", seed: 19, quantization: { bits: 8, group_size: 64 } }, bound: F32 },
  // phi3
  { name: "phi3 f32 partial rotary 0.75", spec: { family: "phi3", seed: 20, config: { partial_rotary_factor: 0.75 } }, bound: F32 },
  {
    name: "phi3 f32 longrope, long factors (context 512 > original 128)",
    spec: { family: "phi3", seed: 21, config: { max_position_embeddings: 512, original_max_position_embeddings: 128, rope_scaling: longrope(8, 128) } },
    bound: F32,
  },
  {
    name: "phi3 f32 rope_scaling type \"su\" (longrope's old name)",
    spec: { family: "phi3", seed: 42, config: { max_position_embeddings: 512, original_max_position_embeddings: 128, rope_scaling: { ...longrope(8, 128), type: "su" } } },
    bound: F32,
  },
  {
    name: "phi3 f32 longrope, short factors (context 128 = original): HF, not mlx-lm",
    spec: {
      family: "phi3", seed: 22, patches: ["phi3_short_factors"],
      config: { max_position_embeddings: 512, original_max_position_embeddings: 128, partial_rotary_factor: 0.5, rope_scaling: longrope(4, 128) },
    },
    engine: { contextSize: 128 },
    bound: F32,
  },
  { name: "phi3 f32 sliding_window 16 < prompt: HF, not mlx-lm", spec: { family: "phi3", seed: 23, patches: ["phi3_sliding_window"], config: { sliding_window: 16 } }, bound: F32 },
  { name: "phi3 f32 sliding_window 2047 > context (Phi-3-mini)", spec: { family: "phi3", seed: 24, config: { sliding_window: 2047 } }, bound: F32 },
  { name: "phi3 f32 tied head (as Phi-4-mini), GQA 4:1", spec: { family: "phi3", seed: 47, config: { tie_word_embeddings: true, num_key_value_heads: 1 } }, bound: F32 },
  { name: "phi3 4-bit g64 (fused qkv/gate_up sliced packed)", spec: { family: "phi3", seed: 25, quantization: q4 }, bound: F32 },
  // gemma
  { name: "gemma f32, gelu tanh: HF, not mlx-lm", spec: { family: "gemma", seed: 26, patches: ["gemma_gelu_tanh"] }, bound: F32 },
  { name: "gemma 4-bit g64, gelu tanh", spec: { family: "gemma", seed: 27, patches: ["gemma_gelu_tanh"], quantization: q4 }, bound: F32 },
  { name: "gemma bf16, gelu tanh", spec: { family: "gemma", seed: 28, dtype: "bfloat16", patches: ["gemma_gelu_tanh"] }, engine: half("bfloat16"), bound: BF16 },
  // gemma2
  {
    name: "gemma2 f32 soft caps 5 (scores) and 3 (logits)",
    spec: { family: "gemma2", seed: 29, config: { attn_logit_softcapping: 5.0, final_logit_softcapping: 3.0 } },
    bound: F32,
  },
  { name: "gemma2 f32 default caps 50 and 30, GQA 4:1", spec: { family: "gemma2", seed: 30, config: { num_key_value_heads: 1 } }, bound: F32 },
  { name: "gemma2 f16", spec: { family: "gemma2", seed: 31, dtype: "float16", config: { final_logit_softcapping: 10.0 } }, engine: half("float16"), bound: F16 },
  { name: "gemma2 4-bit g64", spec: { family: "gemma2", seed: 32, quantization: q4 }, bound: F32 },
  // gemma3_text
  { name: "gemma3_text f32 window 8 < prompt, pattern 2, tied", spec: { family: "gemma3_text", seed: 33 }, bound: F32 },
  {
    name: "gemma3_text f32 window 128 > prompt, pattern 3, untied, linear rope 8 on global layers",
    spec: { family: "gemma3_text", seed: 34, config: { sliding_window: 128, sliding_window_pattern: 3, tie_word_embeddings: false, rope_scaling: { rope_type: "linear", factor: 8.0 } } },
    bound: F32,
  },
  {
    name: "gemma3_text f32 layer_types with window 4",
    spec: { family: "gemma3_text", seed: 35, config: { sliding_window: 4, sliding_window_pattern: 3, layer_types: ["sliding_attention", "sliding_attention", "full_attention"] } },
    bound: F32,
  },
  {
    name: "gemma3_text f32 layer_types disagreeing with sliding_window_pattern: HF, not mlx-lm",
    spec: {
      family: "gemma3_text", seed: 52, patches: ["gemma3_layer_types"],
      config: { sliding_window: 8, sliding_window_pattern: 3, layer_types: ["full_attention", "sliding_attention", "sliding_attention"] },
    },
    bound: F32,
  },
  { name: "gemma3_text f32 700-token prompt (two prefill chunks), window 8", spec: { family: "gemma3_text", seed: 48, prompt_length: 700 }, bound: F32 },
  { name: "gemma3_text f16 (clipped residuals)", spec: { family: "gemma3_text", seed: 36, dtype: "float16" }, engine: half("float16"), bound: F16 },
  { name: "gemma3_text 4-bit g64", spec: { family: "gemma3_text", seed: 37, quantization: q4 }, bound: F32 },
  // gemma3 (multimodal checkpoint, run as its text model)
  {
    name: "gemma3 multimodal f32, vision tower dropped",
    // The tower (4 MiB) outweighs the text model (under 1 MiB), so reading it would show in the load's peak.
    spec: { family: "gemma3", seed: 38, extra_tensors: { "vision_tower.vision_model.embeddings.patch_embedding.weight": [1024, 1024], "multi_modal_projector.mm_input_projection_weight": [8, 8] } },
    bound: F32,
  },
  {
    name: "gemma3 multimodal 4-bit g32, 8-bit down_proj override",
    spec: { family: "gemma3", seed: 39, quantization: { bits: 4, group_size: 32, overrides: { "language_model.model.layers.0.mlp.down_proj": { bits: 8, group_size: 64 } } } },
    bound: F32,
  },
  { name: "gemma3 multimodal bf16", spec: { family: "gemma3", seed: 40, dtype: "bfloat16" }, engine: half("bfloat16"), bound: BF16 },
  // gemma4_text, E2B-shaped: 4 layers (sliding, full, sliding, full), the last 2 sharing the keys/values of
  // layers 0 and 1 (no cache of their own, double-wide MLP), per-layer inputs, sliding head_dim 16 with
  // window 8 < prompt (rotating caches, decode past the window), full layers head_dim 32 with proportional
  // RoPE on a quarter of their pairs (mlx-lm's default rope_parameters).
  { name: "gemma4_text f32 KV sharing, per-layer inputs, window 8 < prompt, tied", spec: { family: "gemma4_text", seed: 60, config: GEMMA4 }, bound: F32 },
  { name: "gemma4_text 4-bit g32", spec: { family: "gemma4_text", seed: 61, config: GEMMA4, quantization: { bits: 4, group_size: 32 } }, bound: F32 },
  {
    name: "gemma4_text f32 700-token prompt (two prefill chunks), window 8",
    spec: { family: "gemma4_text", seed: 62, config: GEMMA4, prompt_length: 700 },
    bound: F32,
  },
  {
    // 26B/31B-shaped attention: full layers take values from k_proj with their own KV heads; no sharing,
    // no per-layer inputs, layer kinds from sliding_window_pattern, untied, no final soft cap, linear and
    // scaled proportional RoPE.
    name: "gemma4_text f32 attention_k_eq_v (1 global KV head), pattern 3, untied, no soft cap",
    spec: {
      family: "gemma4_text", seed: 63,
      config: {
        head_dim: 16, global_head_dim: 32, attention_k_eq_v: true, num_global_key_value_heads: 1, num_kv_shared_layers: 0,
        hidden_size_per_layer_input: 0, sliding_window: 16, sliding_window_pattern: 3, tie_word_embeddings: false, final_logit_softcapping: null,
        rope_parameters: {
          full_attention: { rope_type: "proportional", partial_rotary_factor: 0.5, factor: 2.0, rope_theta: 1e6 },
          sliding_attention: { rope_type: "linear", factor: 2.0, rope_theta: 1e4 },
        },
      },
    },
    bound: F32,
  },
  // gemma4 (multimodal checkpoint, run as its text model)
  {
    name: "gemma4 multimodal f32, vision tower dropped",
    spec: { family: "gemma4", seed: 64, config: { text_config: GEMMA4_TEXT_CONFIG }, extra_tensors: { "vision_tower.patch_embedder.weight": [8, 8] } },
    bound: F32,
  },
  { name: "gemma4 multimodal bf16", spec: { family: "gemma4", seed: 65, config: { text_config: GEMMA4_TEXT_CONFIG }, dtype: "bfloat16" }, engine: half("bfloat16"), bound: BF16 },
  // A trained model (stories260K, shared/models) as it is on disk: head_dim 8, 5 layers, tied head; its
  // mlx-community-style 4-bit copy has float16 scales and an unquantized float16 down_proj (input 172).
  { name: "stories260K hf-f32 (trained llama)", spec: { family: "llama", checkpoint: STORIES("hf-f32") }, bound: F32 },
  { name: "stories260K hf-bf16", spec: { family: "llama", checkpoint: STORIES("hf-bf16") }, engine: half("bfloat16"), bound: BF16 },
  { name: "stories260K mlx-4bit (float16 scales, float down_proj)", spec: { family: "llama", checkpoint: STORIES("mlx-4bit") }, engine: half("float16"), bound: F16 },
];

defineConformanceSuite("MLX engine conformance (mlx-lm)", CASES, (references) => {
  it("loads a multimodal gemma3 checkpoint's text model only: its vision tower is neither read nor counted", async () => {
    const dir = references()[CASES.findIndex((c) => c.name.startsWith("gemma3 multimodal f32"))].modelDir;
    let text = 0, tower = 0;
    for (const file of readdirSync(dir).filter((f) => f.endsWith(".safetensors"))) {
      for (const [name, e] of Object.entries(readSafetensorsHeader(join(dir, file)).entries)) {
        const bytes = e.data_offsets[1] - e.data_offsets[0];
        if (/^(vision_tower|multi_modal_projector)\./.test(name)) tower += bytes;
        else text += bytes;
      }
    }
    expect(tower).toBeGreaterThan(2 * text);
    const { load: peak, weights } = await loadPeaks(dir);
    console.log(`[multimodal load] text model ${text} B, vision tower ${tower} B, weightBytes ${weights} B, load peak ${peak} B`);
    // float32 on disk and in compute: the text model's tensors, byte for byte.
    expect(weights).toBe(text);
    // A read tower would be resident at the load's peak, beside the text model.
    expect(peak).toBeLessThan(text + tower);
  });

  it("gemma3_text local layers keep only their window: a 700-token prompt's cache holds less than two layers' positions", async () => {
    // 3 layers, pattern 2: layers 0 and 2 local (window 8), layer 1 global. One layer keeps 2 (K, V) x 2 KV
    // heads x 32 x 4 bytes = 512 B per position; the cache kept after the request is MLX's only new memory.
    const ref = references()[CASES.findIndex((c) => c.name.startsWith("gemma3_text f32 700-token prompt"))];
    const mlx = new MlxBackend();
    await mlx.load(ref.modelDir);
    try {
      const before = (await MlxBackend.memory()).activeBytes;
      await mlx.generate(ref.prompt, { maxTokens: 1, temperature: 0, ignoreEos: true });
      const kept = (await MlxBackend.memory()).activeBytes - before;
      console.log(`[gemma3_text window 8, 700-token prompt] cache ${kept} B (every layer keeping every position: >= ${3 * 700 * 512} B)`);
      expect(kept).toBeGreaterThanOrEqual(700 * 512);  // the global layer keeps all 700
      expect(kept).toBeLessThan(2 * 700 * 512);
    } finally {
      await mlx.unload();
    }
  });

  it("batches gemma4_text rows past its window: KV-shared layers read their source's columns with the rows' layout (logits and tokens equal each alone)", async () => {
    const prompts = [3, 20, 41, 9].map((n, r) => idsOfLength(n, r));
    for (const seed of [60, 63]) {  // KV sharing and per-layer inputs, window 8; attention_k_eq_v, pattern 3
      const mlx = new MlxBackend();
      await mlx.load(references()[CASES.findIndex((c) => c.spec.family === "gemma4_text" && c.spec.seed === seed)].modelDir, { maxBatch: 3 });
      try {
        expect(mlx.info!.maxBatch, `seed ${seed}`).toBe(3);
        // Measured 0; the shared layers without the rows' mask, or at one position, are of order 1.
        expect(await batchedVersusAlone(mlx, prompts.slice(0, 3)), `seed ${seed}`).toBeLessThanOrEqual(1e-5);
        await expectConcurrentEqualsAlone(mlx, prompts.map((prompt, i) => ({ prompt, options: { maxTokens: [24, 6, 30, 12][i], ignoreEos: true } })), `seed ${seed}`);
      } finally {
        await mlx.unload();
      }
    }
  });

  it("refuses a gemma4_text config it cannot run, naming the key", async () => {
    const ref = references()[CASES.findIndex((c) => c.name.startsWith("gemma4_text f32 KV sharing"))];
    const dir = mkdtempSync(join(tmpdir(), "mlx-node-gemma4-"));
    try {
      cpSync(ref.modelDir, dir, { recursive: true });
      const original = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
      const load = async (edit: Record<string, unknown>) => {
        writeFileSync(join(dir, "config.json"), JSON.stringify({ ...original, ...edit }));
        return new MlxBackend().load(dir);
      };
      await expect(load({ num_kv_shared_layers: 4 })).rejects.toThrow(ModelConfigError);
      await expect(load({ num_kv_shared_layers: 4 })).rejects.toThrow(/num_kv_shared_layers/);
      await expect(load({ vocab_size_per_layer_input: 256 })).rejects.toThrow(/vocab_size_per_layer_input is smaller than vocab_size/);
      const rope = { full_attention: { rope_type: "dynamic" }, sliding_attention: { rope_type: "default" } };
      await expect(load({ rope_parameters: rope })).rejects.toThrow(UnsupportedArchitectureError);
      await expect(load({ rope_parameters: rope })).rejects.toThrow(/rope_parameters.full_attention type 'dynamic' is not supported/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // Window 8 on local layers (gemma4: and KV-shared layers reading the rotated caches): after the
  // 64-token prompt every local cache has rotated.
  it.each(["gemma3_text f32 window 8 < prompt", "gemma4_text f32 KV sharing"])("%s: reuses a prompt prefix through rotated sliding-window caches, and re-evaluates where a rotated cache cannot go back", async (name) => {
    const ref = references()[CASES.findIndex((c) => c.name.startsWith(name))];
    const P = ref.prompt, G = ref.greedy;
    const mlx = new MlxBackend();
    await mlx.load(ref.modelDir);
    try {
      // K and V per position of the layers that own a cache, float32: gemma3_text 3 layers x 2 KV heads x 32;
      // gemma4_text only layers 0 (2 x 16) and 1 (2 x 32): its KV-shared layers 2 and 3 keep none.
      expect(mlx.info!.kvBytesPerToken).toBe(name.startsWith("gemma4") ? 2 * (2 * 16 + 2 * 32) * 4 : 3 * 2 * 2 * 32 * 4);
      const run = (prompt: number[], maxTokens: number) => mlx.generate(prompt, { maxTokens, temperature: 0, ignoreEos: true });
      const first = await run(P, 10);  // decodes 10 steps in place through the ring buffers
      expect(first.tokens).toEqual(G.slice(0, 10));
      // The cache holds P + G[0..9] exactly (the batch step that reads a token has fed it): no trim
      // needed, so it is reused, and the 10 new tokens are appended to the rotated buffers put back
      // in order; the continuation is mlx-lm's.
      const second = await run([...P, ...G.slice(0, 20)], 12);
      expect(second.usage.evaluatedPromptTokens).toBe(10);
      expect(second.tokens).toEqual(G.slice(20));
      // P alone would need the cache trimmed back past positions its windows dropped: evaluated anew.
      const third = await run(P, 32);
      expect(third.usage.evaluatedPromptTokens).toBe(P.length);
      expect(third.tokens).toEqual(G);
    } finally {
      await mlx.unload();
    }
  });
});
