/**
 * Fast deterministic random weights, already rounded to float16.
 *
 * A 0.5B model is ~500M values, so per-value Box-Muller (log, cos) and float16 rounding would
 * dominate write time. Instead each tensor gets a 65,536-entry table of float16 values
 * (mean + std * a fixed pool of normal samples) and one 32-bit PRNG draw picks two entries.
 * Every tensor has its own stream seeded from (seed, tensor name), so writers can produce
 * tensors in any order and the MLX and GGUF files of one seed hold bit-identical weights.
 */
import { f16BitsToF32, f32ToF16Bits } from "../../tests/reference/safetensors.js";
import type { Init } from "./shapes.js";

const TABLE = 1 << 16;

/** mulberry32 output function for a state (the caller advances the state). Small, fast, good enough for weights. */
function mulberry(state: number): number {
  let t = Math.imul(state ^ (state >>> 15), state | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return (t ^ (t >>> 14)) >>> 0;
}

/** FNV-1a over the name, mixed with the seed: the per-tensor stream seed. */
export function streamSeed(seed: number, name: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return mulberry(h);
}

let normalPool: Float64Array | undefined;

/** 65,536 standard normal samples, symmetric (x and -x) so every tensor's mean is exact. */
function pool(): Float64Array {
  if (normalPool) return normalPool;
  const p = new Float64Array(TABLE);
  let s = 0x9e3779b9;
  const uniform = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    return (mulberry(s) + 0.5) / 4294967296;
  };
  for (let i = 0; i < TABLE; i += 2) {
    const z = Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
    p[i] = z;
    p[i + 1] = -z;
  }
  normalPool = p;
  return p;
}

/** Streams the values of one tensor in row-major order. */
export class TensorStream {
  private state: number;
  private readonly bits = new Uint16Array(TABLE);
  private readonly values = new Float32Array(TABLE);
  /** A leftover 16-bit index when a chunk had odd length. */
  private spare = -1;

  constructor(seed: number, name: string, init: Init) {
    this.state = streamSeed(seed, name);
    const p = pool();
    for (let i = 0; i < TABLE; i++) {
      const h = f32ToF16Bits(init.mean + init.std * p[i]);
      this.bits[i] = h;
      this.values[i] = f16BitsToF32(h);
    }
  }

  private nextIndex(): number {
    if (this.spare >= 0) {
      const i = this.spare;
      this.spare = -1;
      return i;
    }
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    const r = mulberry(this.state);
    this.spare = r >>> 16;
    return r & 0xffff;
  }

  /** Fills the next `bits.length` values as float16 bits and (optionally) their float32 values. */
  next(bits: Uint16Array, values?: Float32Array): void {
    const n = bits.length;
    const tb = this.bits;
    const tv = this.values;
    let i = 0;
    if (this.spare >= 0 && n > 0) {
      const k = this.nextIndex();
      bits[0] = tb[k];
      if (values) values[0] = tv[k];
      i = 1;
    }
    // Hot loop: two values per PRNG draw.
    let state = this.state;
    for (; i + 1 < n; i += 2) {
      state = (state + 0x6d2b79f5) >>> 0;
      const r = mulberry(state);
      const a = r & 0xffff;
      const b = r >>> 16;
      bits[i] = tb[a];
      bits[i + 1] = tb[b];
      if (values) {
        values[i] = tv[a];
        values[i + 1] = tv[b];
      }
    }
    this.state = state;
    if (i < n) {
      const k = this.nextIndex();
      bits[i] = tb[k];
      if (values) values[i] = tv[k];
    }
  }
}
