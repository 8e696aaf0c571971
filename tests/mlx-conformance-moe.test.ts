/**
 * Mixture-of-experts families and MLX's quantization modes against mlx-lm (see
 * tests/mlx-conformance.test.ts for the method and the bounds): tiny random checkpoints (hidden 64,
 * 3 layers, 4-8 experts) that mlx-lm builds, saves and runs with its own classes. A 64-token prompt
 * with 2 experts per token is 128 (token, expert) pairs, so prefill takes the sorted-by-expert path
 * and decode the gathered one.
 */
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, it } from "vitest";
import { MlxBackend } from "../lib/backends/mlx.js";
import { ModelFormatError, UnsupportedArchitectureError } from "../lib/errors.js";
import { BOUNDS, defineConformanceSuite, type ConformanceCase } from "./support/conformance-suite.js";
import { batchedVersusAlone, idsOfLength } from "./support/batching.js";
import { loadPeaks } from "./support/mlx.js";

const { F32, BF16 } = BOUNDS;
const q4 = { bits: 4, group_size: 64 };

// Config keys mlx-lm's ModelArgs require beyond conformance.py's COMMON ones.
const MIXTRAL = { architectures: ["MixtralForCausalLM"], num_local_experts: 4, num_experts_per_tok: 2 };
const QWEN3_MOE = {
  architectures: ["Qwen3MoeForCausalLM"], head_dim: 32, num_experts: 8, num_experts_per_tok: 2, decoder_sparse_step: 1,
  mlp_only_layers: [], moe_intermediate_size: 64, norm_topk_prob: true, rope_theta: 1e6, tie_word_embeddings: false,
};
const OLMOE = { architectures: ["OlmoeForCausalLM"], num_experts: 8, num_experts_per_tok: 2, norm_topk_prob: false };

const GPT_OSS = {
  architectures: ["GptOssForCausalLM"], head_dim: 16, num_local_experts: 4, num_experts_per_tok: 2, sliding_window: 16,
  layer_types: ["sliding_attention", "full_attention", "sliding_attention"], rope_theta: 150000,
};
const SAME_NAMES = { gate_proj: "gate_proj", up_proj: "up_proj", down_proj: "down_proj" };
// Gemma 4 26B-A4B-shaped: experts beside the dense MLP on every layer, full layers with values from k_proj.
const GEMMA4_MOE = {
  head_dim: 16, global_head_dim: 32, attention_k_eq_v: true, num_global_key_value_heads: 1, num_kv_shared_layers: 0,
  hidden_size_per_layer_input: 0, sliding_window: 8, layer_types: ["sliding_attention", "sliding_attention", "full_attention"],
  enable_moe_block: true, num_experts: 4, top_k_experts: 2, moe_intermediate_size: 32, tie_word_embeddings: true,
};

const CASES: ConformanceCase[] = [
  { name: "mixtral f32, 4 experts, top-2 (softmax over the top logits)", spec: { family: "mixtral", seed: 101, config: MIXTRAL }, bound: F32 },
  { name: "mixtral 4-bit g64 (quantized experts and router)", spec: { family: "mixtral", seed: 102, config: MIXTRAL, quantization: q4 }, bound: F32 },
  {
    name: "qwen3_moe f32, 8 experts, top-2 renormalized, layer 1 dense (mlp_only_layers)",
    spec: { family: "qwen3_moe", seed: 103, config: { ...QWEN3_MOE, mlp_only_layers: [1] } },
    bound: F32,
  },
  {
    name: "qwen3_moe 4-bit g64, 8-bit router (as mlx-lm's qwen3_moe quant_predicate), top-3 not renormalized",
    spec: {
      family: "qwen3_moe", seed: 104, config: { ...QWEN3_MOE, num_experts_per_tok: 3, norm_topk_prob: false },
      quantization: { ...q4, overrides: Object.fromEntries([0, 1, 2].map((l) => [`model.layers.${l}.mlp.gate`, { bits: 8, group_size: 64 }])) },
    },
    bound: F32,
  },
  { name: "qwen3_moe f32 in 256 KB shards", spec: { family: "qwen3_moe", seed: 124, config: QWEN3_MOE, shard_bytes: 256 * 1024 }, bound: F32 },
  { name: "qwen3_moe f32 in 256 KB shards, per-expert layout", spec: { family: "qwen3_moe", seed: 124, config: QWEN3_MOE, shard_bytes: 256 * 1024, split_experts: SAME_NAMES }, bound: F32 },
  // Half precision only quantized: MLX's CPU gather_mm (dense experts) computes float32 only, so
  // mlx-lm cannot run a dense float16/bfloat16 MoE here; gather_qmm takes any float dtype.
  // mlx-lm's greedy is the argmax of bfloat16 log-probabilities, where logits 1/64 apart can round to
  // a tie it breaks toward the lower id; the engine takes the argmax of the logits. Seed 122 hit one
  // (step 2: logits 2.828 for id 33, 2.844 for id 80, log-probs both -4.0; mlx-lm chose 33, the
  // engine 80, with every logit equal to mlx-lm's): this seed does not.
  {
    name: "qwen3_moe 4-bit g64, bfloat16 scales, computed in bfloat16",
    spec: { family: "qwen3_moe", seed: 123, dtype: "bfloat16", config: QWEN3_MOE, quantization: q4 },
    engine: { computeDtype: "bfloat16" },
    bound: BF16,
  },
  { name: "qwen3_moe 8-bit g32, tied", spec: { family: "qwen3_moe", seed: 105, config: { ...QWEN3_MOE, tie_word_embeddings: true }, quantization: { bits: 8, group_size: 32 } }, bound: F32 },
  { name: "olmoe f32 tied, q/k norms across heads, top-2 of 8", spec: { family: "olmoe", seed: 106, config: OLMOE }, bound: F32 },
  {
    name: "olmoe 4-bit g64 untied, expert and attention biases, top-3 renormalized",
    spec: {
      family: "olmoe", seed: 107, quantization: q4,
      config: { ...OLMOE, tie_word_embeddings: false, mlp_bias: true, attention_bias: true, num_experts_per_tok: 3, norm_topk_prob: true },
    },
    bound: F32,
  },
  // HF's per-expert tensors, which the loader stacks as mlx-lm's sanitize does.
  {
    name: "mixtral f32, HF per-expert layout (experts.N.w1/w2/w3)",
    spec: { family: "mixtral", seed: 108, config: MIXTRAL, split_experts: { gate_proj: "w1", down_proj: "w2", up_proj: "w3" } },
    bound: F32,
  },
  { name: "qwen3_moe f32, HF per-expert layout", spec: { family: "qwen3_moe", seed: 109, config: QWEN3_MOE, split_experts: SAME_NAMES }, bound: F32 },
  { name: "olmoe 4-bit g64, per-expert layout (scales and biases too)", spec: { family: "olmoe", seed: 110, config: OLMOE, quantization: q4, split_experts: SAME_NAMES }, bound: F32 },
  // Quantization modes as mlx_lm.convert --q-mode writes them (uint8 scales, no biases), dense and experts.
  { name: "llama mxfp4 (g32)", spec: { family: "llama", seed: 111, quantization: { bits: 4, group_size: 32, mode: "mxfp4" } }, bound: F32 },
  { name: "llama mxfp8 (g32), tied", spec: { family: "llama", seed: 112, config: { tie_word_embeddings: true }, quantization: { bits: 8, group_size: 32, mode: "mxfp8" } }, bound: F32 },
  { name: "llama nvfp4 (g16)", spec: { family: "llama", seed: 113, quantization: { bits: 4, group_size: 16, mode: "nvfp4" } }, bound: F32 },
  {
    name: "llama mixed modes: mxfp4, affine 8-bit lm_head and 5-bit down_proj override",
    spec: {
      family: "llama", seed: 114,
      quantization: {
        bits: 4, group_size: 32, mode: "mxfp4",
        overrides: { lm_head: { bits: 8, group_size: 64, mode: "affine" }, "model.layers.1.mlp.down_proj": { bits: 5, group_size: 32, mode: "affine" } },
      },
    },
    bound: F32,
  },
  { name: "qwen3_moe mxfp4 experts (gather_qmm)", spec: { family: "qwen3_moe", seed: 115, config: QWEN3_MOE, quantization: { bits: 4, group_size: 32, mode: "mxfp4" } }, bound: F32 },
  // gpt-oss: sinks, biased router and experts, clamped SwiGLU, sliding/full layers (window 16 < prompt).
  { name: "gpt_oss f32, 4 experts top-2, sinks, layer_types window 16", spec: { family: "gpt_oss", seed: 120, config: GPT_OSS }, bound: F32 },
  {
    name: "gpt_oss mxfp4 experts, affine 8-bit router and attention (as mlx-community conversions)",
    spec: {
      family: "gpt_oss", seed: 121, config: GPT_OSS,
      quantization: {
        bits: 4, group_size: 32, mode: "mxfp4",
        overrides: Object.fromEntries([0, 1, 2].flatMap((l) => ["mlp.router", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
          .map((m) => [`model.layers.${l}.${m}`, { bits: 8, group_size: 64, mode: "affine" as const }]))),
      },
    },
    bound: F32,
  },
  // openai's own layout: mxfp4 experts (everything else float) as gate_up_proj_blocks/_scales/_bias with gate
  // and up rows alternating, down_proj_blocks/..., and HF's quantization_config {"quant_method": "mxfp4"}.
  {
    name: "gpt_oss mxfp4 experts in HF's layout (interleaved gate_up_proj_blocks, _scales, _bias; quant_method mxfp4)",
    spec: {
      family: "gpt_oss", seed: 127, config: GPT_OSS, fuse_experts: true,
      quantization: {
        bits: 4, group_size: 32, mode: "mxfp4",
        overrides: Object.fromEntries(["model.embed_tokens", "lm_head", ...[0, 1, 2].flatMap((l) => ["mlp.router", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
          .map((m) => `model.layers.${l}.${m}`))].map((m) => [m, false as const])),
      },
    },
    bound: F32,
  },
  // HF's float gpt-oss layout ([E, hidden, 2 x inter] with alternating gate/up columns, as transformers holds it),
  // which mlx-lm does not read: its reference is the same weights (seed 120) in mlx-lm's layout.
  {
    name: "gpt_oss f32 in HF's float layout (experts.gate_up_proj [E, hidden, 2 x inter] interleaved, _bias, down_proj)",
    spec: { family: "gpt_oss", seed: 120, config: GPT_OSS, fuse_experts: true },
    bound: F32,
  },
  {
    name: "gemma4_text f32, HF fused experts (experts.gate_up_proj gate rows then up rows, experts.down_proj)",
    spec: { family: "gemma4_text", seed: 125, config: GEMMA4_MOE, fuse_experts: true },
    bound: F32,
  },
  {
    name: "gemma4 multimodal f32 in HF's names and fused experts (model.language_model.layers.N.experts.gate_up_proj)",
    spec: {
      family: "gemma4", seed: 129, fuse_experts: true,
      config: { text_config: { ...GEMMA4_MOE, num_hidden_layers: 3, hidden_size: 64, intermediate_size: 128, num_attention_heads: 4, num_key_value_heads: 2, rms_norm_eps: 1e-5 } },
    },
    bound: F32,
  },
  {
    name: "gemma4_text f32, 4 experts top-2 beside the MLP (router norm, per-expert scales, gelu experts), window 8",
    spec: { family: "gemma4_text", seed: 125, config: GEMMA4_MOE },
    bound: F32,
  },
  {
    name: "gemma4_text 4-bit g32 experts, 8-bit g64 router (mlx-lm's gemma4 quant_predicate)",
    spec: {
      family: "gemma4_text", seed: 126, config: GEMMA4_MOE,
      quantization: { bits: 4, group_size: 32, overrides: Object.fromEntries([0, 1, 2].map((l) => [`model.layers.${l}.router.proj`, { bits: 8, group_size: 64 }])) },
    },
    bound: F32,
  },
  // Dense families new with this suite.
  { name: "smollm3 f32, no_rope_layer_interval 2 (layer 1 without RoPE)", spec: { family: "smollm3", seed: 116, config: { no_rope_layer_interval: 2 } }, bound: F32 },
  {
    name: "smollm3 4-bit g64 tied, no_rope_layers [0, 1, 0]",
    spec: { family: "smollm3", seed: 117, config: { no_rope_layers: [0, 1, 0], tie_word_embeddings: true }, quantization: q4 },
    bound: F32,
  },
  {
    name: "ministral3 f32, Llama 4 query scaling (beta 0.5, period 16), layer 0 sliding window 16",
    spec: {
      family: "ministral3", seed: 118,
      config: {
        rope_parameters: { rope_type: "default", rope_theta: 1e6, llama_4_scaling_beta: 0.5, original_max_position_embeddings: 16 },
        layer_types: ["sliding_attention", "full_attention", "full_attention"], sliding_window: 16,
      },
    },
    bound: F32,
  },
  {
    name: "ministral3 4-bit g64 tied, yarn 4 (original 32) under rope_parameters",
    spec: {
      family: "ministral3", seed: 119, quantization: q4,
      config: {
        tie_word_embeddings: true,
        rope_parameters: { rope_type: "yarn", factor: 4.0, original_max_position_embeddings: 32, beta_fast: 32, beta_slow: 1, rope_theta: 1e6, llama_4_scaling_beta: 0.1 },
      },
    },
    bound: F32,
  },
];

defineConformanceSuite("MLX engine conformance (mlx-lm): experts, quantization modes, smollm3, ministral3", CASES, (references) => {
  it("loads an expert model shard by shard: peak memory within the weights plus one shard; HF's per-expert layout costs no more", async () => {
    // The same checkpoint (seed 124) saved in mlx-lm's stacked layout and in HF's per-expert one.
    const peaks: Record<string, number> = {};
    let largest = 0;
    for (const layout of ["stacked", "per-expert"]) {
      const i = CASES.findIndex((c) => c.spec.shard_bytes && Boolean(c.spec.split_experts) === (layout === "per-expert"));
      const dir = references()[i].modelDir;
      const shards = readdirSync(dir).filter((f) => /^model-\d+-of-\d+\.safetensors$/.test(f)).map((f) => statSync(join(dir, f)).size);
      expect(shards.length).toBeGreaterThan(3);
      largest = Math.max(largest, ...shards);
      const m = await loadPeaks(dir);
      expect(m.load).toBeLessThanOrEqual(m.weights + Math.max(...shards));
      peaks[layout] = m.firstToken;
      console.log(`[lazy load, ${layout}] ${shards.length} shards (largest ${Math.max(...shards)} B), weights ${m.weights} B, peak ${m.load} B after load, ${m.firstToken} B after a first token`);
      // 3 layers x keys and values x 2 KV heads x head_dim 32 x 4 bytes (float32)
      expect(m.kvBytesPerToken).toBe(3 * 2 * 2 * 32 * 4);
    }
    expect(peaks["per-expert"]).toBeLessThanOrEqual(peaks.stacked + largest);
  });

  it("splits HF's fused experts.gate_up_proj at a cost of at most one layer's fused tensor over mlx-lm's layout", async () => {
    // gemma4_text seed 125 saved in mlx-lm's switch_glu layout and in HF's fused one.
    const dirs = [false, true].map((fused) => references()[CASES.findIndex((c) => c.spec.family === "gemma4_text" && c.spec.seed === 125 && Boolean(c.spec.fuse_experts) === fused)].modelDir);
    const [stacked, fused] = [await loadPeaks(dirs[0]), await loadPeaks(dirs[1])];
    // 4 experts x 2 x moe_intermediate_size 32 rows x hidden 64 x 4 bytes
    const gateUp = 4 * 2 * 32 * 64 * 4;
    console.log(`[fused experts] weights ${fused.weights} B (mlx-lm layout ${stacked.weights} B), peak ${fused.load} / ${fused.firstToken} B after load / a first token (mlx-lm layout ${stacked.load} / ${stacked.firstToken} B)`);
    expect(fused.weights).toBe(stacked.weights);
    expect(fused.load).toBeLessThanOrEqual(stacked.load + gateUp);
    expect(fused.firstToken).toBeLessThanOrEqual(stacked.firstToken + gateUp);
  });

  it("names the fused tensor when HF's expert layout does not fit the config", async () => {
    const i = CASES.findIndex((c) => c.spec.family === "gpt_oss" && c.spec.fuse_experts && c.spec.quantization);
    const dir = mkdtempSync(join(tmpdir(), "mlx-node-fused-"));
    try {
      cpSync(references()[i].modelDir, dir, { recursive: true });
      const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
      config.intermediate_size = 96;
      writeFileSync(join(dir, "config.json"), JSON.stringify(config));
      const mlx = new MlxBackend();
      await expect(mlx.load(dir)).rejects.toThrow(ModelFormatError);
      await expect(mlx.load(dir)).rejects.toThrow(/model\.layers\.0\.mlp\.experts\.gate_up_proj_blocks/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("batches rows past a 16-position window: gpt_oss (sinks) and ministral3 (position-scaled queries) give each row's logits alone", async () => {
    const prompts = [3, 20, 41].map((n, r) => idsOfLength(n, r));
    for (const name of ["gpt_oss f32", "ministral3 f32"]) {
      const mlx = new MlxBackend();
      await mlx.load(references()[CASES.findIndex((c) => c.name.startsWith(name))].modelDir, { maxBatch: 4 });
      try {
        expect(mlx.info?.maxBatch, name).toBe(4);
        // Measured 0; one position for every row's query scaling, or the sinks dropped, is of order 1.
        expect(await batchedVersusAlone(mlx, prompts), name).toBeLessThanOrEqual(1e-5);
      } finally {
        await mlx.unload();
      }
    }
  });

  it("refuses a quantization mode it does not know, by name", async () => {
    const i = CASES.findIndex((c) => c.spec.quantization?.mode === "mxfp4");
    const dir = mkdtempSync(join(tmpdir(), "mlx-node-mode-"));
    try {
      cpSync(references()[i].modelDir, dir, { recursive: true });
      const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
      config.quantization.mode = "fp3";
      writeFileSync(join(dir, "config.json"), JSON.stringify(config));
      const mlx = new MlxBackend();
      await expect(mlx.load(dir)).rejects.toThrow(UnsupportedArchitectureError);
      await expect(mlx.load(dir)).rejects.toThrow(/quantization mode "fp3" is not supported \(supported: affine, mxfp4, mxfp8, nvfp4\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
