// Plain TypeScript forward pass for llama / mistral / qwen2 / qwen3 / phi3 / gemma / gemma2 / gemma3_text decoders, used as the
// ground truth for the native engine. Deliberately naive: full recompute every call, no KV
// cache, float64 accumulation with float32 storage between ops (like a float32 numpy ref).
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { readSafetensors, type DecodedTensor } from "./safetensors.js";
import { dequantize } from "./quantize.js";

export type Family = "llama" | "mistral" | "qwen2" | "qwen3" | "phi3" | "gemma" | "gemma2" | "gemma3_text";

export interface RopeScaling {
  type: "default" | "linear" | "llama3" | "longrope";
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
  /** longrope: per-pair frequency divisors for contexts up to / beyond the original one. */
  shortFactor?: number[];
  longFactor?: number[];
  /** longrope: multiplies cos and sin (HF); default sqrt(1 + ln(max/original) / ln(original)). */
  attentionFactor?: number;
}

export interface ReferenceConfig {
  modelType: Family;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  maxPositionEmbeddings: number;
  /** Features of each head that RoPE rotates (the first ones): headDim × partial_rotary_factor. */
  ropeDims: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  tieWordEmbeddings: boolean | undefined;
  quantization: Record<string, unknown> | null;
  /** gemma2: query_pre_attn_scalar^-0.5 (else 1/sqrt(headDim)); soft caps, 0 for none. */
  queryScale: number;
  attnLogitSoftcap: number;
  finalLogitSoftcap: number;
  /** gemma3_text: per layer, whether it is local (attends to the last `slidingWindow` positions, RoPE base `localRopeTheta`). */
  slidingLayers: boolean[];
  slidingWindow: number;
  localRopeTheta: number;
}

/** mlx-lm's defaults for what a multimodal gemma3 config's text_config leaves out. */
const GEMMA3_TEXT_DEFAULTS: Record<string, unknown> = {
  hidden_size: 1152, num_hidden_layers: 26, intermediate_size: 6912, num_attention_heads: 8, num_key_value_heads: 4,
  head_dim: 256, rms_norm_eps: 1e-6, rope_theta: 1e6, rope_local_base_freq: 10000, query_pre_attn_scalar: 256,
  sliding_window: 512, sliding_window_pattern: 6, max_position_embeddings: 32768,
};

/** Parse a HF config.json object (with mlx-lm's optional `quantization` block). */
export function parseConfig(outer: Record<string, unknown>): ReferenceConfig {
  // A multimodal gemma3 checkpoint runs as its text model (mlx-lm's models/gemma3.py).
  const raw: Record<string, unknown> = outer.model_type !== "gemma3" ? outer : {
    ...GEMMA3_TEXT_DEFAULTS,
    ...Object.fromEntries(Object.entries(outer.text_config as Record<string, unknown>).filter(([, v]) => v !== null)),
    vocab_size: outer.vocab_size ?? 262208,
    model_type: "gemma3_text",
    quantization: outer.quantization ?? outer.quantization_config,
  };
  const num = (k: string, d?: number): number => {
    const v = raw[k] ?? d;
    if (typeof v !== "number") throw new Error(`config.json: missing numeric ${k}`);
    return v;
  };
  const modelType = raw.model_type as Family;
  if (!["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2", "gemma3_text"].includes(modelType)) throw new Error(`unsupported model_type ${String(modelType)}`);
  const numHeads = num("num_attention_heads");
  const hiddenSize = num("hidden_size");
  let ropeScaling: RopeScaling | null = null;
  const rs = raw.rope_scaling as Record<string, unknown> | null | undefined;
  if (rs) {
    // HF moved from "type" to "rope_type"; accept both.
    let type = (rs.rope_type ?? rs.type ?? "default") as string;
    if (type === "su") type = "longrope"; // its older name
    if (!["default", "linear", "llama3", "longrope"].includes(type)) throw new Error(`unsupported rope_scaling type ${type}`);
    const original = (rs.original_max_position_embeddings ?? (type === "longrope" ? raw.original_max_position_embeddings : undefined)) as number | undefined;
    ropeScaling = {
      type: type as RopeScaling["type"],
      factor: (rs.factor as number | undefined) ?? 1,
      lowFreqFactor: (rs.low_freq_factor as number | undefined) ?? 1,
      highFreqFactor: (rs.high_freq_factor as number | undefined) ?? 4,
      originalMaxPositionEmbeddings: original ?? 8192,
    };
    if (type === "longrope") {
      const maxPos = num("max_position_embeddings");
      const ratio = maxPos / ropeScaling.originalMaxPositionEmbeddings;
      ropeScaling.shortFactor = rs.short_factor as number[];
      ropeScaling.longFactor = rs.long_factor as number[];
      ropeScaling.attentionFactor = (rs.attention_factor as number | undefined) ??
        (ratio <= 1 ? 1 : Math.sqrt(1 + Math.log(ratio) / Math.log(ropeScaling.originalMaxPositionEmbeddings)));
    }
  }
  const headDim = typeof raw.head_dim === "number" ? raw.head_dim : hiddenSize / numHeads;
  return {
    modelType,
    vocabSize: num("vocab_size"),
    hiddenSize,
    intermediateSize: num("intermediate_size"),
    numLayers: num("num_hidden_layers"),
    numHeads,
    numKvHeads: num("num_key_value_heads", numHeads),
    headDim,
    maxPositionEmbeddings: num("max_position_embeddings", 2048),
    // HF Phi3: int(head_dim * partial_rotary_factor) features are rotated.
    ropeDims: Math.floor(headDim * num("partial_rotary_factor", 1)),
    rmsNormEps: num("rms_norm_eps", 1e-6),
    ropeTheta: num("rope_theta", 10000),
    ropeScaling,
    tieWordEmbeddings: raw.tie_word_embeddings as boolean | undefined,
    quantization: (raw.quantization ?? raw.quantization_config ?? null) as Record<string, unknown> | null,
    queryScale: modelType === "gemma2" ? 1 / Math.sqrt(num("query_pre_attn_scalar", 144))
      : modelType === "gemma3_text" ? 1 / Math.sqrt(num("query_pre_attn_scalar", 256)) : 1 / Math.sqrt(headDim),
    // phi3: HF's sliding_window applies to every layer.
    slidingLayers: modelType === "phi3" ? Array.from({ length: typeof raw.sliding_window === "number" ? num("num_hidden_layers") : 0 }, () => true)
      : modelType !== "gemma3_text" ? [] : Array.isArray(raw.layer_types)
      ? (raw.layer_types as string[]).map((t) => t === "sliding_attention")
      : Array.from({ length: num("num_hidden_layers") }, (_, i) => (i + 1) % num("sliding_window_pattern", 6) !== 0),
    slidingWindow: modelType === "gemma3_text" ? num("sliding_window", 512) : modelType === "phi3" && typeof raw.sliding_window === "number" ? raw.sliding_window : 0,
    localRopeTheta: num("rope_local_base_freq", 10000),
    // HF Gemma2Config: 50 and 30 when absent, null to switch a cap off.
    attnLogitSoftcap: modelType === "gemma2" ? ((raw.attn_logit_softcapping === undefined ? 50 : raw.attn_logit_softcapping) as number | null) ?? 0 : 0,
    finalLogitSoftcap: modelType === "gemma2" ? ((raw.final_logit_softcapping === undefined ? 30 : raw.final_logit_softcapping) as number | null) ?? 0
      : modelType === "gemma3_text" ? ((raw.final_logit_softcapping ?? 0) as number) : 0,
  };
}

/**
 * RoPE inverse frequencies (per rotated pair), as HF `_compute_*_rope_parameters`.
 * llama3: long wavelengths are divided by `factor`, short ones kept, and the band between
 * is interpolated; `linear` divides every frequency by `factor` (== positions / factor).
 */
export function ropeInvFreq(headDim: number, theta: number, scaling: RopeScaling | null, contextSize = Infinity): Float64Array {
  const half = headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / theta ** ((2 * i) / headDim);
  if (!scaling || scaling.type === "default") return inv;
  if (scaling.type === "linear") return inv.map((v) => v / scaling.factor);
  if (scaling.type === "longrope") {
    // The long factors when the context exceeds the original one (llama.cpp's choice by context size).
    const ext = contextSize > scaling.originalMaxPositionEmbeddings ? scaling.longFactor : scaling.shortFactor;
    if (!ext || ext.length !== half) throw new Error(`longrope factors must have ${half} entries`);
    return inv.map((v, i) => v / ext[i]);
  }
  const { factor, lowFreqFactor: lo, highFreqFactor: hi, originalMaxPositionEmbeddings: old } = scaling;
  const lowWavelen = old / lo;
  const highWavelen = old / hi;
  return inv.map((v) => {
    const wavelen = (2 * Math.PI) / v;
    if (wavelen < highWavelen) return v;
    if (wavelen > lowWavelen) return v / factor;
    const smooth = (old / wavelen - lo) / (hi - lo);
    return (1 - smooth) * (v / factor) + smooth * v;
  });
}

export type Weights = Map<string, { shape: number[]; data: Float32Array }>;

/** Read all safetensors shards of a model dir (index.json when present) and dequantize MLX-quantized layers. */
export function loadWeights(dir: string, config: ReferenceConfig): Weights {
  const indexPath = join(dir, "model.safetensors.index.json");
  let files: string[];
  if (existsSync(indexPath)) {
    const index = JSON.parse(readFileSync(indexPath, "utf8")) as { weight_map: Record<string, string> };
    files = [...new Set(Object.values(index.weight_map))];
  } else if (existsSync(join(dir, "model.safetensors"))) {
    files = ["model.safetensors"];
  } else {
    files = readdirSync(dir).filter((f) => f.endsWith(".safetensors")).sort();
  }
  const raw = new Map<string, DecodedTensor>();
  for (const f of files) for (const [k, v] of Object.entries(readSafetensors(join(dir, f)))) raw.set(k, v);

  const out: Weights = new Map();
  for (const [stored, t] of raw) {
    if (stored.endsWith(".scales") || stored.endsWith(".biases")) continue;
    // Multimodal gemma3: the text model's tensors under language_model., the vision tower unread.
    if (stored.startsWith("vision_tower.") || stored.startsWith("multi_modal_projector.")) continue;
    const name = stored.startsWith("language_model.") ? stored.slice("language_model.".length) : stored;
    const storedBase = stored.slice(0, stored.lastIndexOf("."));
    const base = name.slice(0, name.lastIndexOf("."));
    const scales = raw.get(`${storedBase}.scales`);
    if (name.endsWith(".weight") && scales) {
      const biases = raw.get(`${storedBase}.biases`);
      if (!biases || !(t.data instanceof Uint32Array)) throw new Error(`${base}: malformed quantized layer`);
      // mlx-lm allows per-layer overrides: quantization["model.layers.0.mlp.down_proj"] = {bits, group_size}.
      const q = config.quantization;
      if (!q) throw new Error(`${base} is quantized but config.json has no quantization block`);
      const per = (q[storedBase] ?? q) as { bits: number; group_size: number };
      const rows = t.shape[0];
      const cols = (t.shape[1] * 32) / per.bits;
      if (cols / per.group_size !== scales.shape[1]) throw new Error(`${base}: scales shape does not match bits/group_size`);
      const w = dequantize(t.data, scales.data as Float32Array, biases.data as Float32Array, per.group_size, per.bits);
      out.set(name, { shape: [rows, cols], data: w });
    } else if (t.data instanceof Float32Array) {
      out.set(name, { shape: t.shape, data: t.data });
    } else {
      throw new Error(`${name}: unexpected integer tensor`);
    }
  }
  return out;
}

// ---- primitive ops on row-major [T, dim] Float32Arrays ----

/** y = x W^T + b, W is [out, in]. */
function linear(x: Float32Array, T: number, W: { shape: number[]; data: Float32Array }, b?: Float32Array): Float32Array {
  const [outDim, inDim] = W.shape;
  const w = W.data;
  const y = new Float32Array(T * outDim);
  for (let t = 0; t < T; t++) {
    const xo = t * inDim;
    for (let o = 0; o < outDim; o++) {
      let s = b ? b[o] : 0;
      const wo = o * inDim;
      for (let i = 0; i < inDim; i++) s += x[xo + i] * w[wo + i];
      y[t * outDim + o] = s;
    }
  }
  return y;
}

/** The number nearest to `v` that bfloat16 holds (round to nearest even on the upper 16 bits of float32). */
function bf16Round(v: number): number {
  const f = new Float32Array([v]);
  const u = new Uint32Array(f.buffer);
  u[0] = (u[0] + 0x7fff + ((u[0] >>> 16) & 1)) & 0xffff0000;
  return f[0];
}

/** GELU with the tanh approximation (PyTorch's gelu(approximate="tanh")). */
function geluTanh(v: number): number {
  return 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v)));
}

/** Splits the columns of a row-major [T, sum(widths)] matrix into [T, width] matrices. */
function splitColumns(y: Float32Array, T: number, widths: number[]): Float32Array[] {
  const total = widths.reduce((a, b) => a + b, 0);
  let start = 0;
  return widths.map((w) => {
    const out = new Float32Array(T * w);
    for (let t = 0; t < T; t++) out.set(y.subarray(t * total + start, t * total + start + w), t * w);
    start += w;
    return out;
  });
}

/** RMSNorm over consecutive chunks of `dim` values (also used per head for qwen3 q/k norms). */
function rmsNorm(x: Float32Array, dim: number, weight: Float32Array, eps: number): Float32Array {
  const y = new Float32Array(x.length);
  for (let r = 0; r < x.length; r += dim) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[r + i] * x[r + i];
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) y[r + i] = weight[i] * (x[r + i] * inv);
  }
  return y;
}

/**
 * In-place rotate-half RoPE on [T, nHeads, headDim] over the first `rotDims` features of each
 * head: pairs (i, i + rotDims/2); the features after them pass through (partial rotary).
 */
function rope(x: Float32Array, T: number, nHeads: number, headDim: number, invFreq: Float64Array, rotDims = headDim, gain = 1): void {
  const half = rotDims / 2;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < nHeads; h++) {
      const o = (t * nHeads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const a = t * invFreq[i];
        const c = Math.cos(a) * gain;
        const s = Math.sin(a) * gain;
        const x1 = x[o + i];
        const x2 = x[o + i + half];
        x[o + i] = x1 * c - x2 * s;
        x[o + i + half] = x2 * c + x1 * s;
      }
    }
  }
}

export function argmax(v: Float32Array): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i; // first index wins ties, like numpy
  return best;
}

export class ReferenceModel {
  readonly invFreq: Float64Array;
  private readonly lmHead: { shape: number[]; data: Float32Array };

  /** longrope's attention factor on the rotated features (1 otherwise). */
  readonly ropeGain: number;
  /** gemma3_text local layers: plain RoPE on rope_local_base_freq. */
  readonly localInvFreq: Float64Array;

  /** @param contextSize the KV cache size the engine is loaded with (longrope picks its factors by it). */
  constructor(
    readonly config: ReferenceConfig,
    readonly weights: Weights,
    contextSize = Math.min(config.maxPositionEmbeddings, 4096),
  ) {
    this.invFreq = ropeInvFreq(config.ropeDims, config.ropeTheta, config.ropeScaling, contextSize);
    this.ropeGain = config.ropeScaling?.attentionFactor ?? 1;
    const head = weights.get("lm_head.weight");
    // mlx-lm drops lm_head when tied; HF may still store it. Tie when asked or when absent
    // (Gemma always ties).
    const tied = config.modelType === "gemma" || config.modelType === "gemma2" || (config.tieWordEmbeddings ?? !head);
    this.localInvFreq = ropeInvFreq(config.headDim, config.localRopeTheta, null);
    const lm = tied ? weights.get("model.embed_tokens.weight") : head;
    if (!lm) throw new Error(tied ? "missing model.embed_tokens.weight" : "missing lm_head.weight (tie_word_embeddings is false)");
    this.lmHead = lm;
  }

  private w(name: string): { shape: number[]; data: Float32Array } {
    const t = this.weights.get(name);
    if (!t) throw new Error(`missing weight ${name}`);
    return t;
  }

  private opt(name: string): Float32Array | undefined {
    return this.weights.get(name)?.data;
  }

  /** Logits for every position of `tokens` (full causal recompute). */
  forward(tokens: number[]): Float32Array[] {
    const c = this.config;
    const T = tokens.length;
    const D = c.hiddenSize;
    const hd = c.headDim;
    const nH = c.numHeads;
    const nKv = c.numKvHeads;
    const groupsPerKv = nH / nKv;
    const scale = c.queryScale;
    const gemma = c.modelType.startsWith("gemma");
    const sandwich = c.modelType === "gemma2" || c.modelType === "gemma3_text";
    // Gemma's RMSNorm multiplies by (1 + weight).
    const normW = (name: string): Float32Array => (gemma ? this.w(name).data.map((v) => 1 + v) : this.w(name).data);
    const softcap = (v: number, cap: number): number => (cap > 0 ? cap * Math.tanh(v / cap) : v);
    const emb = this.w("model.embed_tokens.weight").data;
    let x: Float32Array = new Float32Array(T * D);
    tokens.forEach((tok, t) => {
      if (tok < 0 || tok >= c.vocabSize) throw new Error(`token ${tok} out of range`);
      x.set(emb.subarray(tok * D, tok * D + D), t * D);
    });
    // Gemma 3 rounds the scale through bfloat16 (sqrt(64) = 8 is exact either way; 1152 is not).
    const embedScale = c.modelType === "gemma3_text" ? bf16Round(Math.sqrt(D)) : Math.sqrt(D);
    if (gemma) for (let i = 0; i < x.length; i++) x[i] *= embedScale;

    for (let l = 0; l < c.numLayers; l++) {
      const p = `model.layers.${l}.`;
      const h = rmsNorm(x, D, normW(p + "input_layernorm.weight"), c.rmsNormEps);
      let q: Float32Array, k: Float32Array, v: Float32Array;
      if (c.modelType === "phi3") {
        // One fused projection whose output columns are [q | k | v].
        [q, k, v] = splitColumns(linear(h, T, this.w(p + "self_attn.qkv_proj.weight")), T, [nH * hd, nKv * hd, nKv * hd]);
      } else {
        q = linear(h, T, this.w(p + "self_attn.q_proj.weight"), this.opt(p + "self_attn.q_proj.bias"));
        k = linear(h, T, this.w(p + "self_attn.k_proj.weight"), this.opt(p + "self_attn.k_proj.bias"));
        v = linear(h, T, this.w(p + "self_attn.v_proj.weight"), this.opt(p + "self_attn.v_proj.bias"));
      }
      // qwen3: per-head RMSNorm on q and k before RoPE.
      const qn = this.opt(p + "self_attn.q_norm.weight");
      const kn = this.opt(p + "self_attn.k_norm.weight");
      if (c.modelType === "qwen3" && (!qn || !kn)) throw new Error(`${p}: qwen3 needs q_norm/k_norm`);
      const plusOne = (w?: Float32Array) => (w && c.modelType === "gemma3_text" ? w.map((v) => 1 + v) : w);
      const qr = qn ? rmsNorm(q, hd, plusOne(qn)!, c.rmsNormEps) : q;
      const kr = kn ? rmsNorm(k, hd, plusOne(kn)!, c.rmsNormEps) : k;
      const local = c.slidingLayers[l] === true;
      const ownRope = local && c.modelType === "gemma3_text"; // phi3's windowed layers keep the model's RoPE
      rope(qr, T, nH, hd, ownRope ? this.localInvFreq : this.invFreq, ownRope ? hd : c.ropeDims, this.ropeGain);
      rope(kr, T, nKv, hd, ownRope ? this.localInvFreq : this.invFreq, ownRope ? hd : c.ropeDims, this.ropeGain);
      // A local layer's query at t sees keys t - window < s <= t.
      const first = (t: number) => (local ? Math.max(0, t - c.slidingWindow + 1) : 0);

      const attn = new Float32Array(T * nH * hd);
      const scores = new Float64Array(T);
      for (let hh = 0; hh < nH; hh++) {
        const kvh = Math.floor(hh / groupsPerKv);
        for (let t = 0; t < T; t++) {
          const qo = (t * nH + hh) * hd;
          let mx = -Infinity;
          for (let s = first(t); s <= t; s++) {
            const ko = (s * nKv + kvh) * hd;
            let dot = 0;
            for (let i = 0; i < hd; i++) dot += qr[qo + i] * kr[ko + i];
            scores[s] = softcap(dot * scale, c.attnLogitSoftcap);
            if (scores[s] > mx) mx = scores[s];
          }
          let sum = 0;
          for (let s = first(t); s <= t; s++) sum += scores[s] = Math.exp(scores[s] - mx);
          for (let i = 0; i < hd; i++) {
            let acc = 0;
            for (let s = first(t); s <= t; s++) acc += scores[s] * v[(s * nKv + kvh) * hd + i];
            attn[qo + i] = acc / sum;
          }
        }
      }
      let o = linear(attn, T, this.w(p + "self_attn.o_proj.weight"), this.opt(p + "self_attn.o_proj.bias"));
      // gemma2's sandwich norms: post_attention_layernorm is on the attention output, and the
      // MLP has norms of its own on both sides.
      if (sandwich) o = rmsNorm(o, D, normW(p + "post_attention_layernorm.weight"), c.rmsNormEps);
      for (let i = 0; i < x.length; i++) x[i] += o[i];

      const h2 = rmsNorm(x, D, normW(p + (sandwich ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight")), c.rmsNormEps);
      let gate: Float32Array, up: Float32Array;
      if (c.modelType === "phi3") {
        // Fused [gate | up] columns.
        [gate, up] = splitColumns(linear(h2, T, this.w(p + "mlp.gate_up_proj.weight")), T, [c.intermediateSize, c.intermediateSize]);
      } else {
        gate = linear(h2, T, this.w(p + "mlp.gate_proj.weight"), this.opt(p + "mlp.gate_proj.bias"));
        up = linear(h2, T, this.w(p + "mlp.up_proj.weight"), this.opt(p + "mlp.up_proj.bias"));
      }
      for (let i = 0; i < gate.length; i++) gate[i] = (gemma ? geluTanh(gate[i]) : gate[i] / (1 + Math.exp(-gate[i]))) * up[i];
      let down = linear(gate, T, this.w(p + "mlp.down_proj.weight"), this.opt(p + "mlp.down_proj.bias"));
      if (sandwich) down = rmsNorm(down, D, normW(p + "post_feedforward_layernorm.weight"), c.rmsNormEps);
      for (let i = 0; i < x.length; i++) x[i] += down[i];
    }

    x = rmsNorm(x, D, normW("model.norm.weight"), c.rmsNormEps);
    const logits = linear(x, T, this.lmHead);
    if (c.finalLogitSoftcap > 0) for (let i = 0; i < logits.length; i++) logits[i] = softcap(logits[i], c.finalLogitSoftcap);
    const V = this.lmHead.shape[0];
    return Array.from({ length: T }, (_, t) => logits.slice(t * V, (t + 1) * V));
  }

  /** Greedy decoding with full recompute; returns only the `n` new tokens. */
  greedy(prompt: number[], n: number): number[] {
    const seq = prompt.slice();
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const logits = this.forward(seq);
      const next = argmax(logits[logits.length - 1]);
      out.push(next);
      seq.push(next);
    }
    return out;
  }
}

/** Load config.json + safetensors (single file or sharded index) from a model dir. */
export function loadReferenceModel(dir: string, options: { contextSize?: number } = {}): ReferenceModel {
  const config = parseConfig(JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>);
  return new ReferenceModel(config, loadWeights(dir, config), options.contextSize);
}
