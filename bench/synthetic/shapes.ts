/**
 * Real model shapes for synthetic benchmark models: the config.json of each model as Hugging Face
 * publishes it (key names and values), and the full tensor list with HF and llama.cpp names.
 *
 * Exact: every hyperparameter and weight shape. Substituted: the weights (random) and the
 * tokenizer (see vocab.ts), so bos/eos ids in the written config follow the substitute.
 */

export type ShapeName = "smollm2-135m" | "qwen2.5-0.5b" | "llama3.2-1b";

export interface ModelShape {
  name: ShapeName;
  /** The model these shapes come from. */
  source: string;
  /** `general.architecture` in GGUF and `model_type` in config.json. */
  arch: "llama" | "qwen2";
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  vocab: number;
  tied: boolean;
  /** q/k/v projections have biases (Qwen2). */
  qkvBias: boolean;
  ropeTheta: number;
  rmsEps: number;
  maxPositions: number;
  ropeScaling: Record<string, unknown> | null;
  /** The published config.json, minus keys that depend on the weights (set by {@link hfConfig}). */
  config: Record<string, unknown>;
}

const SMOLLM2: ModelShape = {
  name: "smollm2-135m",
  source: "HuggingFaceTB/SmolLM2-135M",
  arch: "llama", hidden: 576, layers: 30, heads: 9, kvHeads: 3, headDim: 64, intermediate: 1536, vocab: 49152,
  tied: true, qkvBias: false, ropeTheta: 100000, rmsEps: 1e-5, maxPositions: 8192, ropeScaling: null,
  config: {
    architectures: ["LlamaForCausalLM"], attention_bias: false, attention_dropout: 0.0, hidden_act: "silu",
    initializer_range: 0.041666666666666664, is_llama_config: true, mlp_bias: false, pretraining_tp: 1,
    rope_interleaved: false, use_cache: true, transformers_version: "4.40.1",
  },
};

const QWEN25: ModelShape = {
  name: "qwen2.5-0.5b",
  source: "Qwen/Qwen2.5-0.5B",
  arch: "qwen2", hidden: 896, layers: 24, heads: 14, kvHeads: 2, headDim: 64, intermediate: 4864, vocab: 151936,
  tied: true, qkvBias: true, ropeTheta: 1000000.0, rmsEps: 1e-6, maxPositions: 32768, ropeScaling: null,
  config: {
    architectures: ["Qwen2ForCausalLM"], attention_dropout: 0.0, hidden_act: "silu", initializer_range: 0.02,
    sliding_window: 32768, use_cache: true, use_sliding_window: false, transformers_version: "4.43.1",
  },
};

const LLAMA32_1B: ModelShape = {
  name: "llama3.2-1b",
  source: "meta-llama/Llama-3.2-1B",
  arch: "llama", hidden: 2048, layers: 16, heads: 32, kvHeads: 8, headDim: 64, intermediate: 8192, vocab: 128256,
  tied: true, qkvBias: false, ropeTheta: 500000.0, rmsEps: 1e-5, maxPositions: 131072,
  ropeScaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: "llama3" },
  config: {
    architectures: ["LlamaForCausalLM"], attention_bias: false, attention_dropout: 0.0, head_dim: 64, hidden_act: "silu",
    initializer_range: 0.02, mlp_bias: false, pretraining_tp: 1, use_cache: true, transformers_version: "4.45.0.dev0",
  },
};

export const SHAPES: Record<ShapeName, ModelShape> = {
  "smollm2-135m": SMOLLM2,
  "qwen2.5-0.5b": QWEN25,
  "llama3.2-1b": LLAMA32_1B,
};

/** The shape by name; `layers` overrides the depth (reduced-depth variants for fast tests). */
export function getShape(name: string, layers?: number): ModelShape {
  const shape = (SHAPES as Record<string, ModelShape | undefined>)[name];
  if (!shape) throw new Error(`unknown shape ${JSON.stringify(name)} (known: ${Object.keys(SHAPES).join(", ")})`);
  if (layers === undefined) return shape;
  if (!Number.isInteger(layers) || layers < 1) throw new Error(`--layers must be a positive integer, got ${layers}`);
  return { ...shape, layers };
}

/** How a tensor is initialised: value = mean + std * N(0, 1). */
export interface Init {
  mean: number;
  std: number;
}

export interface TensorSpec {
  /** HF / mlx-lm name. */
  name: string;
  /** llama.cpp name. */
  gguf: string;
  /** Row-major HF shape: [out, in] for matrices, [n] for vectors. */
  shape: number[];
  init: Init;
  /**
   * llama.cpp's llama graph uses interleaved ("normal") RoPE where HF uses rotate-half, so
   * convert_hf_to_gguf permutes the rows of q/k within each head. Qwen2 uses NEOX (rotate-half)
   * RoPE in llama.cpp and is not permuted. The value is the number of heads of the tensor.
   */
  ropePermuteHeads?: number;
}

// Random weights: normal * 0.02 (the usual initializer range), norms ≈ 1, small biases.
const WEIGHT: Init = { mean: 0, std: 0.02 };
const NORM: Init = { mean: 1, std: 0.02 };
const BIAS: Init = { mean: 0, std: 0.02 };

/** Every tensor of the model, in mlx-lm's parameter order (embedding, layers, final norm, head). */
export function tensorSpecs(s: ModelShape): TensorSpec[] {
  const q = s.heads * s.headDim;
  const kv = s.kvHeads * s.headDim;
  const permute = s.arch === "llama";
  const out: TensorSpec[] = [{ name: "model.embed_tokens.weight", gguf: "token_embd.weight", shape: [s.vocab, s.hidden], init: WEIGHT }];
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}.`;
    const b = `blk.${l}.`;
    out.push(
      { name: p + "self_attn.q_proj.weight", gguf: b + "attn_q.weight", shape: [q, s.hidden], init: WEIGHT, ...(permute ? { ropePermuteHeads: s.heads } : {}) },
      { name: p + "self_attn.k_proj.weight", gguf: b + "attn_k.weight", shape: [kv, s.hidden], init: WEIGHT, ...(permute ? { ropePermuteHeads: s.kvHeads } : {}) },
      { name: p + "self_attn.v_proj.weight", gguf: b + "attn_v.weight", shape: [kv, s.hidden], init: WEIGHT },
    );
    if (s.qkvBias) {
      out.push(
        { name: p + "self_attn.q_proj.bias", gguf: b + "attn_q.bias", shape: [q], init: BIAS },
        { name: p + "self_attn.k_proj.bias", gguf: b + "attn_k.bias", shape: [kv], init: BIAS },
        { name: p + "self_attn.v_proj.bias", gguf: b + "attn_v.bias", shape: [kv], init: BIAS },
      );
    }
    out.push(
      { name: p + "self_attn.o_proj.weight", gguf: b + "attn_output.weight", shape: [s.hidden, q], init: WEIGHT },
      { name: p + "mlp.gate_proj.weight", gguf: b + "ffn_gate.weight", shape: [s.intermediate, s.hidden], init: WEIGHT },
      { name: p + "mlp.down_proj.weight", gguf: b + "ffn_down.weight", shape: [s.hidden, s.intermediate], init: WEIGHT },
      { name: p + "mlp.up_proj.weight", gguf: b + "ffn_up.weight", shape: [s.intermediate, s.hidden], init: WEIGHT },
      { name: p + "input_layernorm.weight", gguf: b + "attn_norm.weight", shape: [s.hidden], init: NORM },
      { name: p + "post_attention_layernorm.weight", gguf: b + "ffn_norm.weight", shape: [s.hidden], init: NORM },
    );
  }
  out.push({ name: "model.norm.weight", gguf: "output_norm.weight", shape: [s.hidden], init: NORM });
  if (!s.tied) out.push({ name: "lm_head.weight", gguf: "output.weight", shape: [s.vocab, s.hidden], init: WEIGHT });
  return out;
}

/** Number of parameters (tied embeddings counted once). */
export function parameterCount(s: ModelShape): number {
  return tensorSpecs(s).reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
}

/**
 * config.json as HF/mlx-lm write it: the published keys with the real values, the depth actually
 * written, bos/eos ids of the substitute tokenizer, and mlx-lm's `quantization` block (plus the
 * `quantization_config` copy mlx-lm adds) when quantized. Keys sorted, as mlx-lm's save_config does.
 */
export function hfConfig(
  s: ModelShape,
  o: { bosId: number | undefined; eosId: number | undefined; dtype: "float16"; quantization?: { group_size: number; bits: number } },
): Record<string, unknown> {
  const c: Record<string, unknown> = {
    ...s.config,
    model_type: s.arch,
    hidden_size: s.hidden,
    intermediate_size: s.intermediate,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads,
    vocab_size: s.vocab,
    max_position_embeddings: s.maxPositions,
    rms_norm_eps: s.rmsEps,
    rope_theta: s.ropeTheta,
    tie_word_embeddings: s.tied,
    torch_dtype: o.dtype,
    bos_token_id: o.bosId ?? null,
    eos_token_id: o.eosId ?? null,
  };
  if (s.arch === "llama") c.rope_scaling = s.ropeScaling;
  if (s.arch === "qwen2") c.max_window_layers = s.layers;
  if (o.quantization) {
    c.quantization = { ...o.quantization };
    c.quantization_config = { ...o.quantization };
  }
  return Object.fromEntries(Object.keys(c).sort().map((k) => [k, c[k]]));
}
