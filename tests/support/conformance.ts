/**
 * mlx-lm as the arbiter of the MLX engine: case specs (data) are handed to tests/python/conformance.py,
 * which builds each tiny checkpoint with mlx-lm's own classes, saves it as mlx-lm saves it, and records
 * mlx-lm's logits and greedy continuation. References are cached under
 * testCacheDir("conformance", "mlx-lm-<version>", <key>), the key hashing the spec and the generator, so
 * they are made once per mlx-lm version (and device: mlx-lm runs where the engine runs, so both use the
same kernels) and remade only when missing. See the script's docstring for
 * the spec's fields and the output format.
 */
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pythonModules, pythonScripts, runPython, testCacheDir } from "./python.js";

/** mlx.core.quantize's modes (mlx_lm.convert --q-mode). */
export type QuantMode = "affine" | "mxfp4" | "mxfp8" | "nvfp4";

/** One checkpoint for mlx-lm to build and run (the fields of conformance.py's case spec). */
export interface ConformanceSpec {
  /** model_type, e.g. "llama", "gemma3". */
  family: string;
  /** config.json keys over the family's tiny base config (gemma3: its text_config). */
  config?: Record<string, unknown>;
  dtype?: "float32" | "float16" | "bfloat16";
  /**
   * Through mlx_lm.utils.quantize_model; `overrides` maps a module path to its own params, or false (left
   * float); `recipe` is one of mlx_lm.convert's mixed predicates ("mixed_3_6", ...).
   */
  quantization?: {
    bits: number; group_size: number; mode?: QuantMode;
    overrides?: Record<string, { bits: number; group_size: number; mode?: QuantMode } | false>; recipe?: string;
  };
  /** The prompt's length (default 64) and the greedy tokens generated (default 32). */
  prompt_length?: number;
  generate?: number;
  seed?: number;
  /** Tensors mlx-lm's sanitize must drop (name -> shape), added to the saved file. */
  extra_tensors?: Record<string, number[]>;
  /** Deliberate divergences applied to mlx-lm's model (conformance.py PATCHES); the plain result is kept too. */
  patches?: string[];
  /** Save the stacked experts per expert, as HF checkpoints (switch_mlp projection -> per-expert name). */
  split_experts?: Record<string, string>;
  /** Save the stacked experts as HF's Qwen3.5-MoE: one fused experts.gate_up_proj and one experts.down_proj per layer. */
  fuse_experts?: boolean;
  /** save_model's shards hold at most this many bytes each. */
  shard_bytes?: number;
  /** A model directory to run as it is instead of building one (its files are part of the cache key). */
  checkpoint?: string;
}

/** What mlx-lm computed for one spec. */
export interface ConformanceRun {
  greedy: number[];
  /** rows x vocab: the prompt's positions, then the decode steps (see conformance.py). */
  logits: Float32Array[];
}

export interface ConformanceReference extends ConformanceRun {
  /** The checkpoint directory (config.json, safetensors, tokenizer). */
  modelDir: string;
  prompt: number[];
  mlxLm: string;
  /** mlx-lm without the spec's patches, when it has any. */
  plain?: ConformanceRun;
}

const script = "conformance.py";

/** Availability of the generator: python with mlx_lm. */
export function conformanceAvailability(): { available: boolean; reason: string; mlxLm: string } {
  const probe = pythonModules(["mlx_lm"]);
  return { available: probe.available, reason: probe.reason, mlxLm: probe.versions.mlx_lm ?? "" };
}

function cacheKey(spec: ConformanceSpec): string {
  const hash = createHash("sha256").update(readFileSync(join(pythonScripts, script))).update(JSON.stringify(spec));
  if (spec.checkpoint) {
    for (const f of readdirSync(spec.checkpoint, { withFileTypes: true }).filter((e) => e.isFile()).map((e) => e.name).sort()) {
      hash.update(f).update(readFileSync(join(spec.checkpoint, f)));
    }
  }
  return hash.digest("hex").slice(0, 16);
}

function readRun(dir: string, entry: { greedy: number[]; logits: string; rows: number; vocab_size: number }): ConformanceRun {
  const bytes = readFileSync(join(dir, entry.logits));
  const all = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  const logits = Array.from({ length: entry.rows }, (_, r) => all.subarray(r * entry.vocab_size, (r + 1) * entry.vocab_size));
  return { greedy: entry.greedy, logits };
}

/**
 * mlx-lm's references for `specs` on `device`, generating the missing ones in one Python run (with the
 * tokenizer files of `tokenizerDir` copied beside each checkpoint). Returns them in the order of `specs`, and how
 * many were made now and in how many milliseconds.
 */
export function conformanceReferences(specs: readonly ConformanceSpec[], tokenizerDir: string, mlxLm: string, device: "cpu" | "gpu"):
  { references: ConformanceReference[]; made: number; ms: number } {
  const root = testCacheDir("conformance", `mlx-lm-${mlxLm}`, device);
  const keyed = specs.map((spec) => ({ key: cacheKey(spec), ...spec }));
  const missing = keyed.filter((c) => !existsSync(join(root, c.key, "reference.json")));
  const started = performance.now();
  if (missing.length) {
    const casesFile = join(root, `cases-${process.pid}.json`);
    writeFileSync(casesFile, JSON.stringify(missing));
    try {
      runPython(script, [casesFile, root, tokenizerDir, device]);
    } finally {
      rmSync(casesFile, { force: true });
    }
  }
  const ms = performance.now() - started;
  const references = keyed.map(({ key }) => {
    const dir = join(root, key);
    const meta = JSON.parse(readFileSync(join(dir, "reference.json"), "utf8"));
    return {
      ...readRun(dir, meta), modelDir: join(dir, "model"), prompt: meta.prompt as number[], mlxLm: meta.mlx_lm as string,
      ...(meta.plain ? { plain: readRun(dir, meta.plain) } : {}),
    };
  });
  return { references, made: missing.length, ms };
}

/** Max |a - b| over the rows given (all rows of `want` by default). */
export function maxAbsDiff(got: readonly Float32Array[], want: readonly Float32Array[], rows?: readonly number[]): number {
  let max = 0;
  for (const r of rows ?? want.keys()) {
    const g = got[r], w = want[r];
    if (g.length !== w.length) throw new Error(`row ${r}: ${g.length} logits, want ${w.length}`);
    for (let v = 0; v < w.length; v++) {
      const d = Math.abs(g[v] - w[v]);
      if (!(d <= max)) max = Number.isNaN(d) ? Infinity : d;
    }
  }
  return max;
}
