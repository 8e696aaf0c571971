/**
 * Mixture-of-experts decode speed, the MLX engine against mlx-lm on the same directory: a Qwen3-MoE
 * shape scaled down (12 layers, hidden 256, 128 experts, 8 active, 4-bit g64) that mlx-lm builds with
 * its own classes (tests/python/conformance.py, cached). Measured by bench/mlx-lm.ts (each side its
 * own process, paired rounds alternating who goes first, decode tok/s and CPU time per token; goal:
 * engine ÷ mlx-lm decode ≥ 1.0), and the engine's MLX ops per token.
 *   npm run build:ts && node dist/bench/moe.js [tokens=64] [rounds=3]
 */
import { join } from "node:path";
import { MlxBackend } from "../lib/backends/mlx.js";
import { conformanceAvailability, conformanceReferences, type ConformanceSpec } from "../tests/support/conformance.js";
import { benchMlxLm, formatMlxLmBench } from "./mlx-lm.js";

// The tiny models' tokenizer (stories260K, vocabulary 512) in shared/ beside the repository; this
// file runs from dist/bench/.
const TOKENIZER_SOURCE = join(import.meta.dirname, "..", "..", "..", "shared", "models", "stories260K", "hf-f32");

const SPEC: ConformanceSpec = {
  family: "qwen3_moe", seed: 7, prompt_length: 64, generate: 4,
  config: {
    architectures: ["Qwen3MoeForCausalLM"], hidden_size: 256, intermediate_size: 512, num_hidden_layers: 12, num_attention_heads: 8,
    num_key_value_heads: 4, head_dim: 32, num_experts: 128, num_experts_per_tok: 8, moe_intermediate_size: 128, norm_topk_prob: true,
    decoder_sparse_step: 1, mlp_only_layers: [], tie_word_embeddings: false, rope_theta: 1e6,
  },
  quantization: { bits: 4, group_size: 64 },
};

async function main(): Promise<void> {
  const tokens = Number(process.argv[2] ?? 64);
  const rounds = Number(process.argv[3] ?? 3);
  const python = conformanceAvailability();
  if (!python.available) throw new Error(`mlx-lm unavailable: ${python.reason}`);
  const { device } = await MlxBackend.runtimeInfo();
  const [ref] = conformanceReferences([SPEC], TOKENIZER_SOURCE, python.mlxLm, device).references;
  const result = await benchMlxLm({
    rounds, prefillTokens: ref.prompt.length, decodeTokens: tokens, budgetS: 900,
    dirs: [{ id: `qwen3_moe 12L h256 128e top-8 4-bit (${device})`, dir: ref.modelDir }],
  });
  console.log(formatMlxLmBench(result));
}

await main();
