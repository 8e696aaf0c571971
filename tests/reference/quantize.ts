// MLX "affine" quantization, transcribed from the CPU kernel in MLX v0.31.2
// (mlx/backend/cpu/quantized.cpp `quantize<T,U>`; the ops.cpp fallback is the same math).
// Rules that matter for bit-exactness:
//  - all arithmetic is float32 (emulated with Math.fround), rounding is rint (half-to-even);
//  - the end of the group with the larger magnitude is the anchor ("edge"): if |min| > |max|
//    the scale is positive and bias = min, otherwise the scale is NEGATIVE and bias = max;
//  - the scale is then nudged to edge / round(edge / scale) so the edge value is exactly
//    representable; if that rounding gives 0 the group keeps the raw scale and bias = 0;
//  - codes use the float32 scale, but the stored scale/bias are cast to the weight dtype
//    (float16 in typical mlx-lm checkpoints), so dequantization uses the rounded values.
// The Metal kernel differs slightly (w_max starts at 0, round-half-away); the real
// stories260K mlx-4bit file matches this CPU rule on 100% of groups.
import { roundTo } from "./safetensors.js";

export type FloatDtype = "float32" | "float16" | "bfloat16";

export interface Quantized {
  /** Packed codes, shape [rows, cols * bits / 32]; element 0 of a word sits in its lowest bits. */
  wq: Uint32Array;
  /** Per-group scale and bias, shape [rows, cols / groupSize], already cast to `dtype`. */
  scales: Float32Array;
  biases: Float32Array;
}

const f = Math.fround;

/** C rint() under the default rounding mode: round half to even. */
export function rint(x: number): number {
  const fl = Math.floor(x);
  const d = x - fl;
  if (d < 0.5) return fl;
  if (d > 0.5) return fl + 1;
  return fl % 2 === 0 ? fl : fl + 1;
}

function checkParams(cols: number, groupSize: number, bits: number): void {
  if (![32, 64, 128].includes(groupSize)) throw new Error(`unsupported group size ${groupSize}`);
  // Only power-of-two widths pack evenly into uint32 words (3/5/6-bit use a byte layout).
  if (![2, 4, 8].includes(bits)) throw new Error(`unsupported bits ${bits}`);
  if (cols % groupSize !== 0) throw new Error(`last dim ${cols} not divisible by group size ${groupSize}`);
}

/**
 * Quantize a row-major [rows, cols] matrix like `mx.quantize(w, group_size, bits)`.
 * `w` must already hold values of the weight dtype (e.g. float16-rounded), as MLX
 * quantizes the tensor in its stored dtype; `dtype` controls the scale/bias cast.
 */
export function quantize(
  w: Float32Array,
  rows: number,
  cols: number,
  groupSize: number,
  bits: number,
  dtype: FloatDtype = "float32",
): Quantized {
  checkParams(cols, groupSize, bits);
  if (w.length !== rows * cols) throw new Error(`quantize: expected ${rows * cols} values, got ${w.length}`);
  const nBins = (1 << bits) - 1;
  const perWord = 32 / bits;
  const nGroups = (rows * cols) / groupSize;
  const wq = new Uint32Array((rows * cols) / perWord);
  const scales = new Float32Array(nGroups);
  const biases = new Float32Array(nGroups);
  const eps = f(1e-7);
  for (let g = 0; g < nGroups; g++) {
    const off = g * groupSize;
    let min = Infinity;
    let max = -Infinity;
    for (let j = 0; j < groupSize; j++) {
      const v = f(w[off + j]);
      if (v > max) max = v;
      if (v < min) min = v;
    }
    const mask = Math.abs(min) > Math.abs(max);
    let scale = Math.max(f(f(max - min) / nBins), eps);
    if (!mask) scale = -scale;
    const edge = mask ? min : max;
    const q0 = rint(f(edge / scale));
    let bias = 0;
    if (q0 !== 0) {
      scale = f(edge / q0);
      bias = edge;
    }
    for (let j = 0; j < groupSize; j += perWord) {
      let word = 0;
      for (let k = 0; k < perWord; k++) {
        const q = Math.min(Math.max(rint(f(f(w[off + j + k] - bias) / scale)), 0), nBins);
        word += q * 2 ** (k * bits); // arithmetic, not <<, so bit 31 does not go negative
      }
      wq[(off + j) / perWord] = word;
    }
    scales[g] = scale;
    biases[g] = bias;
  }
  return { wq, scales: roundTo(scales, dtype), biases: roundTo(biases, dtype) };
}

/** Unpack codes to one integer per element, row-major [rows, cols]. */
export function unpack(wq: Uint32Array, bits: number): Uint8Array {
  const perWord = 32 / bits;
  const mask = (1 << bits) - 1;
  const out = new Uint8Array(wq.length * perWord);
  for (let i = 0; i < wq.length; i++) {
    const word = wq[i];
    for (let k = 0; k < perWord; k++) out[i * perWord + k] = (word >>> (k * bits)) & mask;
  }
  return out;
}

/**
 * w = q * scale + bias per group, computed in float32 (MLX computes it in the weight
 * dtype; pass `dtype` to round the result the same way).
 */
export function dequantize(
  wq: Uint32Array,
  scales: Float32Array,
  biases: Float32Array,
  groupSize: number,
  bits: number,
  dtype: FloatDtype = "float32",
): Float32Array {
  const q = unpack(wq, bits);
  if (q.length !== scales.length * groupSize || scales.length !== biases.length) {
    throw new Error(`dequantize: ${q.length} codes do not match ${scales.length} groups of ${groupSize}`);
  }
  const out = new Float32Array(q.length);
  for (let i = 0; i < q.length; i++) {
    const g = (i / groupSize) | 0;
    out[i] = f(f(q[i] * scales[g]) + biases[g]);
  }
  return dtype === "float32" ? out : roundTo(out, dtype);
}
