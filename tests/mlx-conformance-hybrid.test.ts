/**
 * Hybrid linear-attention families (qwen3_next, qwen3_5, qwen3_5_moe) against mlx-lm (see
 * tests/mlx-conformance.test.ts for the method and the bounds): tiny random checkpoints (hidden 64,
 * 3 layers: Gated DeltaNet, full attention, Gated DeltaNet) that mlx-lm builds, saves and runs with its
 * own classes, on its ops path for the gated delta rule (the one that runs everywhere). The 64-token
 * prompt is far longer than the conv window (3), and mlx-lm's decode steps carry the conv window and
 * the recurrent state through its ArraysCache; one case's 600-token prompt is prefilled in two chunks.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, it } from "vitest";
import { MlxBackend } from "../lib/backends/mlx.js";
import { ModelConfigError } from "../lib/errors.js";
import { batchedVersusAlone, expectConcurrentEqualsAlone, idsOfLength } from "./support/batching.js";
import { BOUNDS, defineConformanceSuite, type ConformanceCase } from "./support/conformance-suite.js";

const { F32, BF16 } = BOUNDS;
const q4 = { bits: 4, group_size: 64 };
const eightBit = { bits: 8, group_size: 64 };

// Linear attention: 2 key heads shared by 4 value heads (key dim 32: mlx-lm's Metal kernel, which it
// runs on a GPU, spreads a key over 32 threads; value dim 16), conv kernel 4; full attention on every
// second layer (layer 1 of 3) with head_dim 32, of which a quarter is rotated.
const LINEAR = {
  linear_num_key_heads: 2, linear_num_value_heads: 4, linear_key_head_dim: 32, linear_value_head_dim: 16,
  linear_conv_kernel_dim: 4, full_attention_interval: 2, head_dim: 32,
};
const EXPERTS = { num_experts: 8, num_experts_per_tok: 2, moe_intermediate_size: 64, shared_expert_intermediate_size: 64 };
const QWEN3_NEXT = {
  architectures: ["Qwen3NextForCausalLM"], ...LINEAR, ...EXPERTS, rope_theta: 1e6, partial_rotary_factor: 0.25,
  decoder_sparse_step: 1, mlp_only_layers: [], norm_topk_prob: true,
};
const QWEN3_5 = {
  architectures: ["Qwen3_5ForConditionalGeneration"], ...LINEAR,
  rope_parameters: { type: "default", rope_theta: 1e6, partial_rotary_factor: 0.25, mrope_section: [2, 1, 1] },
};
const QWEN3_5_MOE = { ...QWEN3_5, architectures: ["Qwen3_5MoeForConditionalGeneration"], ...EXPERTS };
// mlx-lm's quant_predicate for these families: routers and shared-expert gates in 8 bits.
const gates8 = (prefix: string) => Object.fromEntries([0, 1, 2].flatMap((l) =>
  ["mlp.gate", "mlp.shared_expert_gate"].map((m) => [`${prefix}model.layers.${l}.${m}`, eightBit])));

export const CASES: ConformanceCase[] = [
  { name: "qwen3_next f32, grouped qkvz/ba projections, 8 experts top-2 + shared expert", spec: { family: "qwen3_next", seed: 201, config: QWEN3_NEXT }, bound: F32 },
  {
    name: "qwen3_next 4-bit g64, 8-bit router and shared-expert gate, layer 1 dense (mlp_only_layers), tied",
    spec: { family: "qwen3_next", seed: 202, config: { ...QWEN3_NEXT, mlp_only_layers: [1], tie_word_embeddings: true }, quantization: { ...q4, overrides: gates8("") } },
    bound: F32,
  },
  // HF's layout: per-expert tensors make mlx-lm's sanitize read the norms as stored w - 1.
  { name: "qwen3_next f32, HF per-expert layout (norms stored as w - 1)", spec: { family: "qwen3_next", seed: 203, config: QWEN3_NEXT, split_experts: { gate_proj: "gate_proj", up_proj: "up_proj", down_proj: "down_proj" } }, bound: F32 },
  { name: "qwen3_5 f32 dense, rope_parameters", spec: { family: "qwen3_5", seed: 204, config: QWEN3_5 }, bound: F32 },
  { name: "qwen3_5 4-bit g64, tied, value heads = key heads", spec: { family: "qwen3_5", seed: 205, config: { ...QWEN3_5, tie_word_embeddings: true, linear_num_value_heads: 2 }, quantization: q4 }, bound: F32 },
  // A multi-token-prediction tensor marks an HF checkpoint: mlx-lm drops it and shifts the norms.
  { name: "qwen3_5 f32 with an mtp tensor (HF: norms stored as w - 1)", spec: { family: "qwen3_5", seed: 206, config: QWEN3_5, extra_tensors: { "mtp.fc.weight": [64, 128] } }, bound: F32 },
  {
    name: "qwen3_5 f32, 600-token prompt (two prefill chunks carry the conv window and state)",
    spec: { family: "qwen3_5", seed: 207, config: QWEN3_5, prompt_length: 600, generate: 8 },
    bound: F32,
  },
  {
    name: "qwen3_5 bfloat16 (A_log kept float32, as mlx-lm's cast_predicate), computed in bfloat16",
    spec: { family: "qwen3_5", seed: 211, dtype: "bfloat16", config: QWEN3_5 }, engine: { computeDtype: "bfloat16" }, bound: BF16,
  },
  { name: "qwen3_5_moe f32, 8 experts top-2 + shared expert on every layer", spec: { family: "qwen3_5_moe", seed: 208, config: QWEN3_5_MOE }, bound: F32 },
  {
    name: "qwen3_5_moe 4-bit g64, 8-bit router and shared-expert gate",
    spec: { family: "qwen3_5_moe", seed: 209, config: QWEN3_5_MOE, quantization: { ...q4, overrides: gates8("language_model.") } },
    bound: F32,
  },
  { name: "qwen3_5_moe f32, HF fused experts (experts.gate_up_proj, experts.down_proj)", spec: { family: "qwen3_5_moe", seed: 210, config: QWEN3_5_MOE, fuse_experts: true }, bound: F32 },
];

defineConformanceSuite("MLX engine conformance (mlx-lm): hybrid linear attention (qwen3_next, qwen3_5, qwen3_5_moe)", CASES, (references) => {
  it("reuses a cached conversation only when it is a prefix of the prompt (a recurrent state cannot be cut back)", async () => {
    const ref = references()[CASES.findIndex((c) => c.spec.family === "qwen3_5" && !c.spec.quantization)];
    const greedy = { temperature: 0, ignoreEos: true } as const;
    const fresh = new MlxBackend();
    await fresh.load(ref.modelDir, { promptCacheBytes: 0 });
    const mlx = new MlxBackend();
    await mlx.load(ref.modelDir);
    try {
      const prompt = ref.prompt;  // 64 tokens: mlx-lm's greedy continuation is ref.greedy
      const first = await mlx.generate(prompt, { ...greedy, maxTokens: 8 });
      expect(first.tokens).toEqual(ref.greedy.slice(0, 8));
      // A follow-up turn: the cache holds the prompt and the 8 tokens (the batch step that reads a
      // token has fed it), so only the new tokens are evaluated, from the carried conv windows and states.
      const followUp = [...prompt, ...first.tokens, 7, 11, 13];
      const next = await mlx.generate(followUp, { ...greedy, maxTokens: 8 });
      expect(next.usage.evaluatedPromptTokens).toBe(3);
      expect(next.tokens).toEqual((await fresh.generate(followUp, { ...greedy, maxTokens: 8 })).tokens);
      // The first prompt again: the cached sequence goes past it and cannot be trimmed back, so it is
      // evaluated in full, and the answer is the first one.
      const again = await mlx.generate(prompt, { ...greedy, maxTokens: 8 });
      expect(again.usage.evaluatedPromptTokens).toBe(prompt.length);
      expect(again.tokens).toEqual(first.tokens);
    } finally {
      await mlx.unload();
      await fresh.unload();
    }
  });

  it("batches rows of different lengths: each row's conv window and state are its own (batched logits and concurrent tokens equal each alone)", async () => {
    const greedy = { temperature: 0, ignoreEos: true } as const;
    const prompts = [3, 20, 41, 9].map((n, r) => idsOfLength(n, r));
    for (const family of ["qwen3_next", "qwen3_5", "qwen3_5_moe"]) {
      const mlx = new MlxBackend();
      await mlx.load(references()[CASES.findIndex((c) => c.spec.family === family && !c.spec.quantization)].modelDir, { maxBatch: 3 });
      try {
        expect(mlx.info!.maxBatch, family).toBe(3);
        // Measured 0; rows' states swapped on a join or a leave give differences of order 1.
        expect(await batchedVersusAlone(mlx, prompts.slice(0, 3)), family).toBeLessThanOrEqual(1e-5);
        // Four requests on three rows: one leaves early, the fourth joins the two still decoding.
        await expectConcurrentEqualsAlone(mlx, prompts.map((prompt, i) => ({ prompt, options: { ...greedy, maxTokens: [24, 6, 30, 12][i] } })), family);
      } finally {
        await mlx.unload();
      }
    }
  });

  it("refuses linear-attention heads that do not group, naming the keys", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mlx-node-hybrid-"));
    try {
      cpSync(references()[0].modelDir, dir, { recursive: true });
      const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
      config.linear_num_value_heads = 3;
      writeFileSync(join(dir, "config.json"), JSON.stringify(config));
      await expect(new MlxBackend().load(dir)).rejects.toThrow(ModelConfigError);
      await expect(new MlxBackend().load(dir)).rejects.toThrow(/linear_num_value_heads \(3\) is not a multiple of linear_num_key_heads \(2\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("states the KV bytes per token of the full-attention layers only", async () => {
    const mlx = new MlxBackend();
    await mlx.load(references()[0].modelDir);
    try {
      // 1 full-attention layer of 3 x keys and values x 2 KV heads x head_dim 32 x 4 bytes (float32)
      expect(mlx.info!.kvBytesPerToken).toBe(1 * 2 * 2 * 32 * 4);
    } finally {
      await mlx.unload();
    }
  });
});
