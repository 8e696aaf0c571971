/**
 * ggml's Q8_0 and Q4_0 block formats, written like ggml's reference quantizers
 * (quantize_row_q8_0_ref / quantize_row_q4_0_ref in ggml-quants.c): float32 arithmetic
 * (Math.fround), scale stored as float16 (round to nearest even).
 *
 * Blocks cover 32 consecutive values of a row (ggml's ne0, the HF "in" dimension):
 * - Q8_0, 34 bytes: f16 d = amax / 127, then 32 int8 q = roundf(x / d); value = q * d.
 * - Q4_0, 18 bytes: f16 d = max / -8 (max = the value of largest magnitude, with its sign),
 *   then 16 bytes of 4-bit codes q = min(15, (int)(x / d + 8.5)); byte j holds element j in its
 *   low nibble and element j + 16 in its high nibble; value = (q - 8) * d.
 */
import { f16BitsToF32, f32ToF16Bits } from "../../tests/reference/safetensors.js";

export const QK = 32;
export const Q8_0_BYTES = 34;
export const Q4_0_BYTES = 18;

const f = Math.fround;

/** C roundf: halves away from zero. Exact here because x + 0.5 is exact in float64 for a float32 x. */
function roundf(x: number): number {
  return x >= 0 ? Math.floor(x + 0.5) : -Math.floor(-x + 0.5);
}

/** Quantizes `x` (length a multiple of 32) into `out` (x.length / 32 * 34 bytes). */
export function quantizeQ8_0(x: Float32Array, out: Uint8Array): void {
  const nb = x.length / QK;
  for (let i = 0; i < nb; i++) {
    const base = i * QK;
    let amax = 0;
    for (let j = 0; j < QK; j++) {
      const a = Math.abs(x[base + j]);
      if (a > amax) amax = a;
    }
    const d = f(amax / 127);
    const id = d ? f(1 / d) : 0;
    const h = f32ToF16Bits(d);
    const o = i * Q8_0_BYTES;
    out[o] = h & 0xff;
    out[o + 1] = h >>> 8;
    for (let j = 0; j < QK; j++) out[o + 2 + j] = roundf(f(x[base + j] * id)) & 0xff;
  }
}

/** Quantizes `x` (length a multiple of 32) into `out` (x.length / 32 * 18 bytes). */
export function quantizeQ4_0(x: Float32Array, out: Uint8Array): void {
  const nb = x.length / QK;
  for (let i = 0; i < nb; i++) {
    const base = i * QK;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK; j++) {
      const v = x[base + j];
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = f(max / -8);
    const id = d ? f(1 / d) : 0;
    const h = f32ToF16Bits(d);
    const o = i * Q4_0_BYTES;
    out[o] = h & 0xff;
    out[o + 1] = h >>> 8;
    for (let j = 0; j < QK / 2; j++) {
      // (int8_t)(x * id + 8.5f) truncates toward zero; the sum is always >= 0.5 here.
      const lo = Math.min(15, Math.trunc(f(f(x[base + j] * id) + 8.5)));
      const hi = Math.min(15, Math.trunc(f(f(x[base + QK / 2 + j] * id) + 8.5)));
      out[o + 2 + j] = lo | (hi << 4);
    }
  }
}

/** Decodes Q8_0 blocks (for tests). */
export function dequantizeQ8_0(data: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n / QK; i++) {
    const o = i * Q8_0_BYTES;
    const d = f16BitsToF32(data[o] | (data[o + 1] << 8));
    for (let j = 0; j < QK; j++) out[i * QK + j] = ((data[o + 2 + j] << 24) >> 24) * d;
  }
  return out;
}

/** Decodes Q4_0 blocks (for tests). */
export function dequantizeQ4_0(data: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n / QK; i++) {
    const o = i * Q4_0_BYTES;
    const d = f16BitsToF32(data[o] | (data[o + 1] << 8));
    for (let j = 0; j < QK / 2; j++) {
      const b = data[o + 2 + j];
      out[i * QK + j] = ((b & 0x0f) - 8) * d;
      out[i * QK + QK / 2 + j] = ((b >>> 4) - 8) * d;
    }
  }
  return out;
}
