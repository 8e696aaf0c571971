/**
 * Adapters trained by mlx-lm's own `mlx_lm lora` (tests/python/lora.py) on a few made-up facts,
 * cached under testCacheDir("lora", "mlx-lm-<version>", <key>) (the key hashes the spec, the facts,
 * the script and the base model's files), so a run trains only what is missing. Also mlx-lm's greedy
 * continuations with an adapter (what `mlx_lm generate --adapter-path` prints), cached the same way.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeSafetensors, type TensorInput } from "../reference/safetensors.js";
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

/** The linear modules of a block of a llama-style or phi3 (fused qkv_proj, gate_up_proj) config: key -> [in, out]. */
export function blockLinears(config: Record<string, number | string>): Record<string, [number, number]> {
  const n = (k: string) => Number(config[k]);
  const hidden = n("hidden_size"), inter = n("intermediate_size"), heads = n("num_attention_heads");
  const headDim = config.head_dim !== undefined ? n("head_dim") : hidden / heads;
  const q = heads * headDim, kv = (config.num_key_value_heads !== undefined ? n("num_key_value_heads") : heads) * headDim;
  const attention: Record<string, [number, number]> = config.model_type === "phi3"
    ? { "self_attn.qkv_proj": [hidden, q + 2 * kv] }
    : { "self_attn.q_proj": [hidden, q], "self_attn.k_proj": [hidden, kv], "self_attn.v_proj": [hidden, kv] };
  const mlp: Record<string, [number, number]> = config.model_type === "phi3"
    ? { "mlp.gate_up_proj": [hidden, 2 * inter] }
    : { "mlp.gate_proj": [hidden, inter], "mlp.up_proj": [hidden, inter] };
  return { ...attention, "self_attn.o_proj": [q, hidden], ...mlp, "mlp.down_proj": [inter, hidden] };
}

/**
 * Writes an adapter in mlx_lm.lora's format with seeded random weights on every linear of every block
 * of the model at `modelDir` (DoRA: magnitudes in [0.5, 1.5]). For speed and for checks against
 * mlx-lm that do not need a trained adapter.
 */
export function writeRandomAdapter(modelDir: string, out: string, options: { rank: number; type?: "lora" | "dora"; seed?: number }): string {
  const config = JSON.parse(readFileSync(join(modelDir, "config.json"), "utf8")) as Record<string, number | string>;
  let state = options.seed ?? 1;
  const uniform = (n: number, low: number, high: number) => Float32Array.from({ length: n }, () => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return low + (high - low) * (state / 2 ** 31);
  });
  const r = options.rank;
  const tensors: Record<string, TensorInput> = {};
  for (let l = 0; l < Number(config.num_hidden_layers); l++) {
    for (const [key, [inDim, outDim]] of Object.entries(blockLinears(config))) {
      const name = `model.layers.${l}.${key}`, bound = 1 / Math.sqrt(inDim);
      tensors[`${name}.lora_a`] = { dtype: "F32", shape: [inDim, r], data: uniform(inDim * r, -bound, bound) };
      tensors[`${name}.lora_b`] = { dtype: "F32", shape: [r, outDim], data: uniform(r * outDim, -0.01, 0.01) };
      if (options.type === "dora") tensors[`${name}.m`] = { dtype: "F32", shape: [outDim], data: uniform(outDim, 0.5, 1.5) };
    }
  }
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, "adapter_config.json"), JSON.stringify({
    fine_tune_type: options.type ?? "lora", num_layers: -1, lora_parameters: { rank: r, scale: 20, dropout: 0 },
  }));
  writeSafetensors(join(out, "adapters.safetensors"), tensors);
  return out;
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
