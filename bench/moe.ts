/**
 * Mixture-of-experts and hybrid decode speed, the MLX engine against mlx-lm on the same directory: a
 * Qwen3-MoE shape scaled down (12 layers, hidden 256, 128 experts, 8 active, 4-bit g64) and a Qwen3.5-MoE
 * one (Gated DeltaNet layers), that mlx-lm builds with its own classes (tests/python/conformance.py,
 * cached). Prints a row per model: decode tok/s of each, their ratio (goal >= 1.0) and the engine's MLX
 * ops per token.
 *   npm run build:ts && node dist/bench/moe.js [tokens=64]
 */
import { join } from "node:path";
import { MlxBackend } from "../lib/backends/mlx.js";
import { conformanceAvailability, conformanceReferences, type ConformanceSpec } from "../tests/support/conformance.js";
import { runPython } from "../tests/support/python.js";

// The tiny models' tokenizer (stories260K, vocabulary 512) in shared/ beside the repository; this
// file runs from dist/bench/.
const TOKENIZER_SOURCE = join(import.meta.dirname, "..", "..", "..", "shared", "models", "stories260K", "hf-f32");

const ROWS: { label: string; spec: ConformanceSpec }[] = [
  {
    label: "qwen3_moe 12L h256 128e top-8 4-bit",
    spec: {
      family: "qwen3_moe", seed: 7, prompt_length: 64, generate: 4,
      config: {
        architectures: ["Qwen3MoeForCausalLM"], hidden_size: 256, intermediate_size: 512, num_hidden_layers: 12, num_attention_heads: 8,
        num_key_value_heads: 4, head_dim: 32, num_experts: 128, num_experts_per_tok: 8, moe_intermediate_size: 128, norm_topk_prob: true,
        decoder_sparse_step: 1, mlp_only_layers: [], tie_word_embeddings: false, rope_theta: 1e6,
      },
      quantization: { bits: 4, group_size: 64 },
    },
  },
  {
    // Qwen3.5-MoE's shape scaled down: 3 of 4 layers Gated DeltaNet (state 8 x 64 x 64 each), 64 experts + shared.
    label: "qwen3_5_moe 8L h256 (6 linear) 64e top-8 + shared 4-bit",
    spec: {
      family: "qwen3_5_moe", seed: 8, prompt_length: 64, generate: 4,
      config: {
        architectures: ["Qwen3_5MoeForConditionalGeneration"], hidden_size: 256, intermediate_size: 512, num_hidden_layers: 8,
        num_attention_heads: 8, num_key_value_heads: 2, head_dim: 64, linear_num_key_heads: 4, linear_num_value_heads: 8,
        linear_key_head_dim: 64, linear_value_head_dim: 64, linear_conv_kernel_dim: 4, full_attention_interval: 4,
        num_experts: 64, num_experts_per_tok: 8, moe_intermediate_size: 128, shared_expert_intermediate_size: 256,
        rope_parameters: { type: "default", rope_theta: 1e7, partial_rotary_factor: 0.25 },
      },
      quantization: { bits: 4, group_size: 64 },
    },
  },
];

async function main(): Promise<void> {
  const tokens = Number(process.argv[2] ?? 64);
  const python = conformanceAvailability();
  if (!python.available) throw new Error(`mlx-lm unavailable: ${python.reason}`);
  const { device } = await MlxBackend.runtimeInfo();
  const refs = conformanceReferences(ROWS.map((r) => r.spec), TOKENIZER_SOURCE, python.mlxLm, device).references;
  console.log(`| model | device | mlx-lm tok/s | engine tok/s | engine / mlx-lm | ops/token |`);
  console.log(`|---|---|---|---|---|---|`);
  for (const [i, ref] of refs.entries()) {
    const mlxLm = JSON.parse(runPython("decode_speed.py", [ref.modelDir, device, String(ref.prompt.length), String(tokens)], { timeoutMs: 900_000 }));
    const mlx = new MlxBackend();
    await mlx.load(ref.modelDir);
    let tps = 0, ops = 0;
    try {
      for (let run = 0; run < 2; run++) {  // the first run warms up
        await mlx.generate(ref.prompt, { maxTokens: tokens, temperature: 0, ignoreEos: true });
        const stats = mlx.lastGenerationStats!;
        tps = (stats.generatedTokens - 1) / (stats.decodeMs / 1000);
        ops = stats.opsPerToken;
      }
    } finally {
      await mlx.unload();
    }
    console.log(`| ${ROWS[i].label} | ${device} | ${mlxLm.tokens_per_s.toFixed(1)} | ${tps.toFixed(1)} | ${(tps / mlxLm.tokens_per_s).toFixed(2)} | ${ops} |`);
  }
}

await main();
