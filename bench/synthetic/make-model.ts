/**
 * CLI: writes a synthetic model with the exact shapes of a real one (random weights, a real but
 * possibly substituted tokenizer) so the MLX and GGUF engines can be timed on identical shapes.
 *
 *   node dist/bench/synthetic/make-model.js --shape smollm2-135m --format mlx --dtype float16|q4 \
 *     [--out bench/.models/smollm2-135m-mlx-float16]
 *   node dist/bench/synthetic/make-model.js --shape qwen2.5-0.5b --format gguf --dtype f16|q8_0|q4_0 \
 *     [--out bench/.models/qwen2.5-0.5b-q4_0.gguf]
 *
 * Options: --seed N (default 1), --layers N (reduced depth), --tokenizer llama3|llama2|<dir>
 * (default llama3), --pure (q4_0: output matrix Q4_0 too), --max-shard-gb N (mlx, default 5).
 */
import { existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { writeGgufModel, type GgufDtype } from "./gguf-writer.js";
import { SYNTHETIC_MARKER, writeMlxModel, type MlxDtype, type WriteResult } from "./mlx-writer.js";
import { getShape, parameterCount, SHAPES } from "./shapes.js";

const MLX_DTYPES: readonly MlxDtype[] = ["float16", "q4"];
const GGUF_DTYPES: readonly GgufDtype[] = ["f16", "q8_0", "q4_0"];

export interface MakeModelArgs {
  shape: string;
  format: "mlx" | "gguf";
  dtype: string;
  out?: string;
  seed?: number;
  layers?: number;
  tokenizer?: string;
  pure?: boolean;
  maxShardGb?: number;
}

/** Writes one model; the default output is bench/.models/<shape>[-L<layers>]-<format>-<dtype>. */
export function makeModel(a: MakeModelArgs): WriteResult {
  const shape = getShape(a.shape, a.layers);
  const seed = a.seed ?? 1;
  const tokenizer = a.tokenizer ?? "llama3";
  const depth = a.layers !== undefined ? `-L${a.layers}` : "";
  if (a.format === "mlx") {
    if (!MLX_DTYPES.includes(a.dtype as MlxDtype)) throw new Error(`--dtype for mlx: ${MLX_DTYPES.join(" | ")}`);
    const out = resolve(a.out ?? `bench/.models/${shape.name}${depth}-mlx-${a.dtype}`);
    // Replace an earlier synthetic model (stale shards would confuse loaders), never anything else.
    if (existsSync(out) && readdirSync(out).length > 0) {
      if (!existsSync(join(out, SYNTHETIC_MARKER))) throw new Error(`${out} exists and is not a synthetic model directory; choose another --out`);
      rmSync(out, { recursive: true, force: true });
    }
    return writeMlxModel(out, {
      shape, dtype: a.dtype as MlxDtype, seed, tokenizer,
      ...(a.maxShardGb !== undefined ? { maxShardBytes: Math.floor(a.maxShardGb * 2 ** 30) } : {}),
    });
  }
  if (a.format === "gguf") {
    if (!GGUF_DTYPES.includes(a.dtype as GgufDtype)) throw new Error(`--dtype for gguf: ${GGUF_DTYPES.join(" | ")}`);
    const out = resolve(a.out ?? `bench/.models/${shape.name}${depth}-${a.dtype}.gguf`);
    mkdirSync(dirname(out), { recursive: true });
    return writeGgufModel(out, { shape, dtype: a.dtype as GgufDtype, seed, tokenizer, pure: a.pure ?? false });
  }
  throw new Error(`--format must be mlx or gguf, got ${JSON.stringify(a.format)}`);
}

function int(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`--${name} must be a number, got ${JSON.stringify(v)}`);
  return n;
}

function main(): void {
  const { values } = parseArgs({
    options: {
      shape: { type: "string" }, format: { type: "string" }, dtype: { type: "string" }, out: { type: "string" },
      seed: { type: "string" }, layers: { type: "string" }, tokenizer: { type: "string" }, pure: { type: "boolean" },
      "max-shard-gb": { type: "string" }, help: { type: "boolean" },
    },
  });
  if (values.help || !values.shape || !values.format || !values.dtype) {
    console.log(`usage: make-model --shape ${Object.keys(SHAPES).join("|")} --format mlx|gguf --dtype <dtype> [--out PATH]
  mlx dtypes: ${MLX_DTYPES.join(", ")}; gguf dtypes: ${GGUF_DTYPES.join(", ")}
  --seed N  --layers N  --tokenizer llama3|llama2|<dir>  --pure  --max-shard-gb N`);
    process.exitCode = values.help ? 0 : 1;
    return;
  }
  const layers = int("layers", values.layers);
  const shape = getShape(values.shape, layers);
  const r = makeModel({
    shape: values.shape, format: values.format as "mlx" | "gguf", dtype: values.dtype,
    ...(values.out !== undefined ? { out: values.out } : {}),
    ...(values.seed !== undefined ? { seed: int("seed", values.seed) } : {}),
    ...(layers !== undefined ? { layers } : {}),
    ...(values.tokenizer !== undefined ? { tokenizer: values.tokenizer } : {}),
    ...(values.pure ? { pure: true } : {}),
    ...(values["max-shard-gb"] !== undefined ? { maxShardGb: int("max-shard-gb", values["max-shard-gb"]) } : {}),
  });
  const mb = (n: number): string => `${(n / 2 ** 20).toFixed(1)} MiB`;
  console.log(`wrote ${r.path} in ${r.seconds.toFixed(1)} s (${(parameterCount(shape) / 1e6).toFixed(1)}M parameters, weights ${mb(r.weightBytes)})`);
  for (const f of r.files) console.log(`  ${f.name}  ${mb(f.bytes)}`);
  for (const n of r.notes) console.log(`  ${n}`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  try {
    main();
  } catch (error) {
    console.error(`make-model: ${error instanceof Error ? error.message : String(error)}`);
    process.exitCode = 1;
  }
}
