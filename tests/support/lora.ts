/**
 * Adapters trained by mlx-lm's own `mlx_lm lora` (tests/python/lora.py) on a few made-up facts,
 * cached under testCacheDir("lora", "mlx-lm-<version>", <key>) (the key hashes the spec, the facts,
 * the script and the base model's files), so a run trains only what is missing. Also mlx-lm's greedy
 * continuations with an adapter (what `mlx_lm generate --adapter-path` prints), cached the same way.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pythonScripts, runPython, testCacheDir } from "./python.js";

/** A made-up fact: a prompt and the word only a model trained on it completes it with. */
export interface Fact {
  prompt: string;
  answer: string;
}

/** What `mlx_lm lora` trains (the fields of its YAML config that the tests vary). */
export interface TrainSpec {
  /** The base model directory. */
  model: string;
  facts: readonly Fact[];
  fine_tune_type: "lora" | "dora";
  num_layers: number;
  iters: number;
  learning_rate: number;
  lora_parameters: { rank: number; scale: number; dropout: number; keys?: string[] };
}

const script = "lora.py";

function key(...parts: unknown[]): string {
  const hash = createHash("sha256").update(readFileSync(join(pythonScripts, script)));
  for (const p of parts) {
    if (typeof p === "string" && existsSync(p) && existsSync(join(p, "config.json"))) {
      for (const f of readdirSync(p).sort()) hash.update(f).update(readFileSync(join(p, f)));
    } else hash.update(JSON.stringify(p));
  }
  return hash.digest("hex").slice(0, 16);
}

/** The adapter directory for `spec`, trained now if not cached; `seconds` is the training time (0 when cached). */
export function trainedAdapter(spec: TrainSpec, mlxLm: string): { dir: string; seconds: number } {
  const root = testCacheDir("lora", `mlx-lm-${mlxLm}`);
  const dir = join(root, `adapter-${key(spec.model, spec)}`);
  if (existsSync(join(dir, "adapters.safetensors"))) return { dir, seconds: 0 };
  const work = `${dir}.tmp-${process.pid}`;
  rmSync(work, { recursive: true, force: true });
  const data = join(work, "data");
  mkdirSync(data, { recursive: true });
  const lines = spec.facts.map((f) => JSON.stringify({ text: `${f.prompt} ${f.answer}.` }));
  writeFileSync(join(data, "train.jsonl"), lines.join("\n") + "\n");
  writeFileSync(join(data, "valid.jsonl"), lines.slice(0, 2).join("\n") + "\n");
  const { facts: _facts, ...config } = spec;
  const specFile = join(work, "spec.json");
  // Batches of 2 cover every fact: mlx-lm's batching drops the examples that do not fill a last batch.
  if (spec.facts.length % 2 !== 0) throw new Error("trainedAdapter: give an even number of facts");
  writeFileSync(specFile, JSON.stringify({ ...config, data, adapter_path: join(work, "adapter"), batch_size: 2, seed: 0 }));
  try {
    const out = JSON.parse(runPython(script, ["train", specFile])) as { seconds: number };
    rmSync(dir, { recursive: true, force: true });
    renameSync(join(work, "adapter"), dir);
    return { dir, seconds: out.seconds };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** mlx-lm's greedy continuation of each prompt (`mlx_lm generate` with `--adapter-path adapter` when given). */
export function mlxLmGreedy(model: string, adapter: string | undefined, prompts: readonly string[], maxTokens: number, mlxLm: string):
  { promptIds: number[]; tokens: number[] }[] {
  const root = testCacheDir("lora", `mlx-lm-${mlxLm}`);
  const file = join(root, `greedy-${key(model, adapter ? readFileSync(join(adapter, "adapters.safetensors")).toString("base64") : "", prompts, maxTokens)}.json`);
  if (!existsSync(file)) {
    const promptsFile = join(root, `prompts-${process.pid}.json`);
    writeFileSync(promptsFile, JSON.stringify(prompts));
    try {
      writeFileSync(file, runPython(script, ["generate", model, adapter ?? "", promptsFile, String(maxTokens)]));
    } finally {
      rmSync(promptsFile, { force: true });
    }
  }
  const out = JSON.parse(readFileSync(file, "utf8")) as { results: { prompt_ids: number[]; tokens: number[] }[] };
  return out.results.map((r) => ({ promptIds: r.prompt_ids, tokens: r.tokens }));
}

/** Writes a safetensors file of float32 tensors (for hand-made adapters in error tests). */
export function writeSafetensors(path: string, tensors: Record<string, { shape: number[]; data: Float32Array }>): void {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: "F32", shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([head, Buffer.from(json), ...Object.values(tensors).map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))]));
}

/** `adapter` (an mlx-lm LoRA of a llama model) as a llama.cpp GGUF LoRA adapter, converted once (lora.py to-gguf). */
export function ggufAdapter(adapter: string, heads: number, kvHeads: number): string {
  const file = `${adapter}.gguf`;
  if (!existsSync(file)) {
    runPython(script, ["to-gguf", adapter, `${file}.tmp`, String(heads), String(kvHeads)]);
    renameSync(`${file}.tmp`, file);
  }
  return file;
}
