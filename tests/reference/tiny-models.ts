// Writes tiny random checkpoints in the exact on-disk layout of HF / mlx-lm models so the
// native engine and the TS reference can be compared on every family, dtype and quant mode.
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { roundTo, writeSafetensors, DTYPE_BYTES, type TensorInput } from "./safetensors.js";
import { quantize } from "./quantize.js";
import type { Family } from "./model.js";

// shared/ sits beside the repository (as the README and CI lay it out).
export const TOKENIZER_SOURCE = join(import.meta.dirname, "..", "..", "..", "shared", "models", "stories260K", "hf-f32");
const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"];

export type TinyDtype = "float32" | "float16" | "bfloat16";

export interface TinyModelOptions {
  family: Family;
  dtype: TinyDtype;
  /** mlx-lm style affine quantization of every Linear/Embedding whose input dim % groupSize == 0. */
  quantize?: { bits: 4 | 8; groupSize: 32 | 64 };
  seed: number;
  /** Raw HF rope_scaling object, e.g. { rope_type: "llama3", factor: 8, ... } or { type: "linear", factor: 2 }. */
  ropeScaling?: Record<string, unknown>;
  tieWordEmbeddings?: boolean;
  /** >1 writes model-0000i-of-0000N.safetensors + model.safetensors.index.json. */
  shards?: number;
  /** Default 3. */
  numLayers?: number;
  /**
   * Default 128. A value that is not a multiple of the group size (e.g. 136) leaves every
   * mlp.down_proj unquantized (its input dim), as mlx-lm does, while gate/up stay quantized.
   */
  intermediateSize?: number;
  /** phi3 only: the share of each head's features RoPE rotates. Default 1. */
  partialRotaryFactor?: number;
  /** Default 2048. */
  maxPositionEmbeddings?: number;
  /** gemma3_text: sliding_window (default 5) and layer_types (default: sliding_window_pattern 2); phi3: sliding_window (default none). */
  slidingWindow?: number;
  layerTypes?: ("sliding_attention" | "full_attention")[];
  /** gemma3_text only: write it as a multimodal gemma3 checkpoint (nested text_config, language_model. names, a vision tower). */
  multimodal?: boolean;
  /** gemma2 only: attn_logit_softcapping and final_logit_softcapping (null: off). Defaults 2 and 4. */
  softcaps?: { attention: number | null; final: number | null };
  /** phi3 only (longrope's boundary between short and long factors). Default 2048. */
  originalMaxPositionEmbeddings?: number;
}

export interface TinyModel {
  dir: string;
  config: Record<string, unknown>;
  /** Names of tensors written packed (have .scales/.biases). */
  quantized: string[];
  /** Names of weight tensors left in float because their input dim is not divisible. */
  unquantized: string[];
  files: string[];
}

export const TINY_VOCAB = 512;
const HIDDEN = 64;
const HEADS = 4;
const KV_HEADS = 2;

/** mulberry32: tiny, fast, deterministic across platforms. */
export function makeRng(seed: number): { uniform(): number; normal(): number } {
  let a = seed >>> 0;
  const uniform = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = (): number => {
    const u = Math.max(uniform(), 1e-12); // Box-Muller; avoid log(0)
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * uniform());
  };
  return { uniform, normal };
}

function buildConfig(o: TinyModelOptions, headDim: number, inter: number, tied: boolean): Record<string, unknown> {
  const qwen = o.family === "qwen2" || o.family === "qwen3";
  const arch = { llama: "LlamaForCausalLM", mistral: "MistralForCausalLM", qwen2: "Qwen2ForCausalLM", qwen3: "Qwen3ForCausalLM", phi3: "Phi3ForCausalLM", gemma: "GemmaForCausalLM", gemma2: "Gemma2ForCausalLM", gemma3_text: "Gemma3ForCausalLM" }[o.family];
  const c: Record<string, unknown> = {
    architectures: [arch],
    model_type: o.family,
    vocab_size: TINY_VOCAB,
    hidden_size: HIDDEN,
    intermediate_size: inter,
    num_hidden_layers: o.numLayers ?? 3,
    num_attention_heads: HEADS,
    num_key_value_heads: KV_HEADS,
    hidden_act: "silu",
    max_position_embeddings: o.maxPositionEmbeddings ?? 2048,
    rms_norm_eps: qwen ? 1e-6 : 1e-5,
    // Mistral v0.2+ and Qwen use theta 1e6; this also keeps mistral distinct from llama.
    rope_theta: o.family === "llama" || o.family === "phi3" ? 10000.0 : 1000000.0,
    rope_scaling: o.ropeScaling ?? null,
    tie_word_embeddings: tied,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: o.dtype,
  };
  if (o.family === "llama" || o.family === "qwen3") c.attention_bias = false;
  if (o.family === "llama") c.mlp_bias = false;
  if (o.family === "qwen3") c.head_dim = headDim; // deliberately != hidden/heads
  if (o.family === "mistral") Object.assign(c, { head_dim: headDim, sliding_window: null });
  if (o.family === "qwen2") Object.assign(c, { use_sliding_window: false, sliding_window: 32768, max_window_layers: c.num_hidden_layers });
  // Phi-3 mini 4k's keys; a partial rotary factor as Phi-4-mini has (0.75) exercises partial RoPE.
  if (o.family === "gemma") {
    Object.assign(c, { head_dim: headDim, hidden_act: "gelu", hidden_activation: "gelu_pytorch_tanh" });
    c.tie_word_embeddings = true;
  }
  if (o.family === "gemma2") {
    // Small caps so the tiny model's scores and logits reach the tanh's bend (real ones: 50 and 30).
    Object.assign(c, {
      head_dim: headDim, query_pre_attn_scalar: 24, attn_logit_softcapping: o.softcaps?.attention ?? 2,
      final_logit_softcapping: o.softcaps?.final ?? 4, hidden_activation: "gelu_pytorch_tanh", sliding_window: 4096,
    });
    c.tie_word_embeddings = true;
  }
  if (o.family === "gemma3_text") {
    // A 5-token window over 3 layers (local, global, local) so a 12-token prompt crosses it.
    Object.assign(c, {
      head_dim: headDim, query_pre_attn_scalar: 24, sliding_window: o.slidingWindow ?? 5, rope_local_base_freq: 10000.0,
      hidden_activation: "gelu_pytorch_tanh", attn_logit_softcapping: null, final_logit_softcapping: null,
      ...(o.layerTypes ? { layer_types: o.layerTypes } : { sliding_window_pattern: 2 }),
    });
    c.tie_word_embeddings = true;
  }
  if (o.family === "phi3") {
    Object.assign(c, { original_max_position_embeddings: o.originalMaxPositionEmbeddings ?? 2048, partial_rotary_factor: o.partialRotaryFactor ?? 1 });
    if (o.slidingWindow !== undefined) c.sliding_window = o.slidingWindow;
  }
  if (o.quantize) {
    // mlx-lm writes both keys with the same content.
    c.quantization = { group_size: o.quantize.groupSize, bits: o.quantize.bits };
    c.quantization_config = { group_size: o.quantize.groupSize, bits: o.quantize.bits };
  }
  return c;
}

export function writeTinyModel(dir: string, o: TinyModelOptions): TinyModel {
  const rng = makeRng(o.seed);
  const L = o.numLayers ?? 3;
  const inter = o.intermediateSize ?? 128;
  const gemma = o.family.startsWith("gemma");
  const headDim = o.family === "qwen3" || gemma ? 32 : HIDDEN / HEADS;
  const tied = gemma || (o.tieWordEmbeddings ?? false);
  const config = buildConfig(o, headDim, inter, tied);

  // Float weights in generation order (fixed, so a given seed always gives the same model).
  const float = new Map<string, { shape: number[]; data: Float32Array }>();
  const gen = (name: string, shape: number[], std: number, mean = 0): void => {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = mean + std * rng.normal();
    float.set(name, { shape, data: roundTo(data, o.dtype) });
  };
  // Init scales were tuned so greedy decoding does not collapse (checked over 12 seeds per
  // family). Tied heads need a small embedding and strong o/down projections, or the raw
  // embedding dominates the residual and the model just predicts the current token again.
  const outStd = tied ? 0.5 : 0.15;
  // Gemma multiplies embeddings by sqrt(hidden) on the way in: divided here, they enter at the
  // other tied models' 0.2 (and the tied head stays small enough not to repeat the input token).
  gen("model.embed_tokens.weight", [TINY_VOCAB, HIDDEN], gemma ? 0.2 / Math.sqrt(HIDDEN) : tied ? 0.2 : 0.3);
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`;
    // Gemma stores norm weights as w - 1 (it scales by 1 + w).
    const normMean = gemma ? 0 : 1;
    gen(p + "input_layernorm.weight", [HIDDEN], 0.1, normMean);
    if (o.family === "phi3") {
      gen(p + "self_attn.qkv_proj.weight", [(HEADS + 2 * KV_HEADS) * headDim, HIDDEN], 0.15); // rows [q; k; v]
    } else {
      gen(p + "self_attn.q_proj.weight", [HEADS * headDim, HIDDEN], 0.15);
      gen(p + "self_attn.k_proj.weight", [KV_HEADS * headDim, HIDDEN], 0.15);
      gen(p + "self_attn.v_proj.weight", [KV_HEADS * headDim, HIDDEN], 0.15);
    }
    if (o.family === "qwen2") {
      gen(p + "self_attn.q_proj.bias", [HEADS * headDim], 0.1);
      gen(p + "self_attn.k_proj.bias", [KV_HEADS * headDim], 0.1);
      gen(p + "self_attn.v_proj.bias", [KV_HEADS * headDim], 0.1);
    }
    if (o.family === "qwen3" || o.family === "gemma3_text") {
      // Gain ~2 sharpens attention; with unit q/k norms attention is near-uniform and
      // greedy output often locks onto one token. (Gemma stores the gain minus 1.)
      gen(p + "self_attn.q_norm.weight", [headDim], 0.2, o.family === "gemma3_text" ? 1 : 2);
      gen(p + "self_attn.k_norm.weight", [headDim], 0.2, o.family === "gemma3_text" ? 1 : 2);
    }
    gen(p + "self_attn.o_proj.weight", [HIDDEN, HEADS * headDim], outStd);
    gen(p + "post_attention_layernorm.weight", [HIDDEN], 0.1, normMean);
    if (o.family === "gemma2" || o.family === "gemma3_text") {
      gen(p + "pre_feedforward_layernorm.weight", [HIDDEN], 0.1, 0);
      gen(p + "post_feedforward_layernorm.weight", [HIDDEN], 0.1, 0);
    }
    if (o.family === "phi3") {
      gen(p + "mlp.gate_up_proj.weight", [2 * inter, HIDDEN], 0.15); // rows [gate; up]
    } else {
      gen(p + "mlp.gate_proj.weight", [inter, HIDDEN], 0.15);
      gen(p + "mlp.up_proj.weight", [inter, HIDDEN], 0.15);
    }
    gen(p + "mlp.down_proj.weight", [HIDDEN, inter], outStd);
  }
  gen("model.norm.weight", [HIDDEN], 0.1, (tied ? 1.5 : 1) - (gemma ? 1 : 0)); // keeps tied logits spread
  if (!tied) gen("lm_head.weight", [TINY_VOCAB, HIDDEN], 0.3);

  const stDtype = ({ float32: "F32", float16: "F16", bfloat16: "BF16" } as const)[o.dtype];
  const tensors: Record<string, TensorInput> = {};
  const quantized: string[] = [];
  const unquantized: string[] = [];
  for (const [name, t] of float) {
    const isMatrix = t.shape.length === 2; // every Linear and the Embedding
    const q = o.quantize;
    if (q && isMatrix && t.shape[1] % q.groupSize === 0) {
      const base = name.slice(0, -".weight".length);
      const r = quantize(t.data, t.shape[0], t.shape[1], q.groupSize, q.bits, o.dtype);
      const gShape = [t.shape[0], t.shape[1] / q.groupSize];
      tensors[name] = { dtype: "U32", shape: [t.shape[0], (t.shape[1] * q.bits) / 32], data: r.wq };
      tensors[base + ".scales"] = { dtype: stDtype, shape: gShape, data: r.scales };
      tensors[base + ".biases"] = { dtype: stDtype, shape: gShape, data: r.biases };
      quantized.push(name);
    } else {
      if (q && isMatrix) unquantized.push(name);
      tensors[name] = { dtype: stDtype, shape: t.shape, data: t.data };
    }
  }

  let written: Record<string, unknown> = config;
  if (o.multimodal) {
    if (o.family !== "gemma3_text") throw new Error("multimodal: gemma3_text only");
    // As mlx-community's Gemma 3 4B+: the text config nested, its tensors prefixed, a vision tower beside.
    const { quantization, quantization_config, vocab_size, ...text } = config;
    written = {
      architectures: ["Gemma3ForConditionalGeneration"], model_type: "gemma3", vocab_size,
      text_config: { ...text, model_type: "gemma3_text" }, vision_config: { model_type: "siglip_vision_model", hidden_size: 8 },
      ...(quantization ? { quantization, quantization_config } : {}),
    };
    for (const name of Object.keys(tensors)) {
      tensors[`language_model.${name}`] = tensors[name];
      delete tensors[name];
    }
    const vision = new Float32Array(64).map(() => rng.normal());
    tensors["vision_tower.vision_model.embeddings.patch_embedding.weight"] = { dtype: stDtype, shape: [8, 8], data: roundTo(vision, o.dtype) };
    tensors["multi_modal_projector.mm_input_projection_weight"] = { dtype: stDtype, shape: [8, 8], data: roundTo(vision, o.dtype) };
  }
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "config.json"), JSON.stringify(written, null, 2));
  const metadata = { format: o.quantize ? "mlx" : "pt" };
  const files = writeShards(dir, tensors, o.shards ?? 1, metadata);
  for (const f of TOKENIZER_FILES) {
    const src = join(TOKENIZER_SOURCE, f);
    if (existsSync(src)) copyFileSync(src, join(dir, f));
  }
  return { dir, config: written, quantized, unquantized, files };
}

function writeShards(dir: string, tensors: Record<string, TensorInput>, shards: number, metadata: Record<string, string>): string[] {
  const names = Object.keys(tensors);
  if (shards <= 1) {
    writeSafetensors(join(dir, "model.safetensors"), tensors, metadata);
    return ["model.safetensors"];
  }
  if (shards > names.length) throw new Error(`cannot split ${names.length} tensors into ${shards} shards`);
  const bytes = (n: string): number => tensors[n].data.length * DTYPE_BYTES[tensors[n].dtype];
  const total = names.reduce((s, n) => s + bytes(n), 0);
  // Greedy contiguous split by size, keeping at least one tensor for each remaining shard.
  const groups: string[][] = [];
  let i = 0;
  for (let s = 0; s < shards; s++) {
    const g: string[] = [];
    const target = (total * (s + 1)) / shards;
    let acc = groups.flat().reduce((a, n) => a + bytes(n), 0);
    while (i < names.length && (g.length === 0 || s === shards - 1 || (acc < target && names.length - i > shards - s - 1))) {
      acc += bytes(names[i]);
      g.push(names[i++]);
    }
    groups.push(g);
  }
  const pad = (n: number): string => String(n).padStart(5, "0");
  const weightMap: Record<string, string> = {};
  const files = groups.map((g, s) => {
    const file = `model-${pad(s + 1)}-of-${pad(shards)}.safetensors`;
    writeSafetensors(join(dir, file), Object.fromEntries(g.map((n) => [n, tensors[n]])), metadata);
    for (const n of g) weightMap[n] = file;
    return file;
  });
  writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2));
  return [...files, "model.safetensors.index.json"];
}
