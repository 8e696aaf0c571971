/**
 * Which files of a repository a model needs: an MLX/HF directory's config, tokenizer, chat template
 * and weights (the shards its safetensors index names), or one GGUF file with its split parts.
 * Works on plain path lists, so the same rules serve a hub listing and a cached snapshot.
 */
import { ModelNotFoundError } from "../errors.js";

/** Small files an MLX/HF model directory may need beside its weights (mlx-lm reads the same set). */
const DIRECTORY_METADATA = new Set([
  "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
  "tokenizer.model", "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
]);
export const SAFETENSORS_INDEX = "model.safetensors.index.json";

const SPLIT = /-(\d{5})-of-(\d{5})\.gguf$/i;

/** What a model name selects in a repository. */
export type Selection =
  | { format: "mlx"; files: string[] }
  | { format: "gguf"; files: string[]; primary: string };

/** The repository holds an MLX/HF model directory (config.json plus safetensors at the top level). */
export function isModelDirectory(paths: readonly string[]): boolean {
  return paths.includes("config.json") && paths.some((p) => !p.includes("/") && p.endsWith(".safetensors"));
}

/**
 * A directory model's files. With `weightMap` (the index's `weight_map`), exactly the shards it names;
 * without an index, `model.safetensors` or else every top-level safetensors file.
 */
export function directoryFiles(paths: readonly string[], weightMap?: Record<string, string>): string[] {
  const top = paths.filter((p) => !p.includes("/"));
  const metadata = top.filter((p) => DIRECTORY_METADATA.has(p) || p === SAFETENSORS_INDEX);
  let weights: string[];
  if (weightMap) weights = [...new Set(Object.values(weightMap))];
  else if (top.includes("model.safetensors")) weights = ["model.safetensors"];
  else weights = top.filter((p) => p.endsWith(".safetensors"));
  return [...metadata, ...weights];
}

/** One GGUF model: a single file, or every part of a split one (`-00001-of-00003.gguf`), first part first. */
function ggufGroup(file: string): string[] {
  const split = SPLIT.exec(file);
  if (!split) return [file];
  const count = Number(split[2]);
  const stem = file.slice(0, split.index);
  return Array.from({ length: count }, (_, i) => `${stem}-${String(i + 1).padStart(5, "0")}-of-${split[2]}.gguf`);
}

/** GGUF models in a listing, keyed by their first file; vision projectors (mmproj) are not models. */
function ggufModels(paths: readonly string[]): string[] {
  const firsts = new Set<string>();
  for (const p of paths) {
    if (!p.toLowerCase().endsWith(".gguf") || /mmproj/i.test(p)) continue;
    firsts.add(ggufGroup(p)[0]!);
  }
  return [...firsts].sort();
}

/** Whether a GGUF file name carries quantization `quant` as a whole word (`model-Q4_K_M.gguf`, `model.q8_0.gguf`). */
function hasQuant(file: string, quant: string): boolean {
  const stem = file.replace(SPLIT, "").replace(/\.gguf$/i, "").split("/").pop()!;
  const escaped = quant.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`(^|[-._])${escaped}($|[-._])`, "i").test(stem);
}

/**
 * Chooses the model files a name asks for among `paths`.
 * @param where names the repository and revision in errors, e.g. `owner/name@main`
 * @throws ModelNotFoundError when the file, quantization or any model is missing, or the choice is ambiguous
 */
export function selectFiles(paths: readonly string[], want: { file?: string; quant?: string }, where: string): Selection {
  const available = ggufModels(paths);
  const list = available.length > 0 ? `GGUF files there: ${available.join(", ")}` : "it has no GGUF files";
  if (want.file !== undefined) {
    const group = ggufGroup(want.file);
    const missing = group.filter((p) => !paths.includes(p));
    if (missing.length > 0) throw new ModelNotFoundError(where, `no file ${missing.join(", ")} in the repository; ${list}`);
    return { format: "gguf", files: group, primary: group[0]! };
  }
  if (want.quant !== undefined) {
    const matches = available.filter((p) => hasQuant(p, want.quant!));
    if (matches.length === 0) throw new ModelNotFoundError(where, `no GGUF file with quantization ${want.quant}; ${list}`);
    if (matches.length > 1) throw new ModelNotFoundError(where, `quantization ${want.quant} matches several files (${matches.join(", ")}); name one with hf:<repo>/<file>`);
    return { format: "gguf", files: ggufGroup(matches[0]!), primary: matches[0]! };
  }
  if (isModelDirectory(paths)) return { format: "mlx", files: directoryFiles(paths) };
  if (available.length === 1) return { format: "gguf", files: ggufGroup(available[0]!), primary: available[0]! };
  if (available.length > 1) throw new ModelNotFoundError(where, `several GGUF models (${available.join(", ")}); pick one with :<quantization> or /<file>`);
  throw new ModelNotFoundError(where, "the repository holds neither an MLX/HF model (config.json and safetensors) nor a GGUF file");
}
