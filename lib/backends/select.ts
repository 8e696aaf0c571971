/**
 * Automatic backend choice: a `.gguf` file goes to the GGUF backend; a model directory goes to
 * MLX when the MLX engine is available here, otherwise the error names why and what to use.
 */
import { stat } from "node:fs/promises";
import type { BackendName, InferenceBackend, LoadOptions } from "../backend.js";
import { BackendUnavailableError, InvalidOptionError, ModelNotFoundError } from "../errors.js";
import { resolveModel, type PullOptions } from "../hub/pull.js";
import { checkModelPath } from "../options.js";
import type { BackendOptions } from "./base.js";
import { GgufBackend } from "./gguf.js";
import { MlxBackend, mlxAvailability } from "./mlx.js";

/** Which backend was chosen, and why. */
export interface BackendSelection {
  backend: BackendName;
  reason: string;
}

/** Options for {@link loadModel}. */
export interface LoadModelOptions extends LoadOptions, BackendOptions {
  /** `auto` picks from the path (see {@link chooseBackend}); `mlx` or `gguf` force one. Defaults to `auto`. */
  backend?: "auto" | BackendName;
  /** Download progress when the model is a hub name that is not cached yet (see `pullModel`). */
  onProgress?: PullOptions["onProgress"];
  /** Cache, endpoint, token and offline settings for hub names. Default to Hugging Face's environment variables. */
  hub?: Omit<PullOptions, "onProgress" | "signal">;
}

/** A loaded model: the backend that runs it, plus why that backend was chosen. */
export type LoadedModel = (MlxBackend | GgufBackend) & { readonly selection: BackendSelection };

/**
 * Decides which backend runs `modelPath` without loading it.
 * @throws ModelNotFoundError when the path does not exist
 * @throws BackendUnavailableError when a directory is given and MLX cannot run here
 */
export async function chooseBackend(modelPath: string, backend: "auto" | BackendName = "auto"): Promise<BackendSelection> {
  const path = checkModelPath(modelPath);
  if (!["auto", "mlx", "gguf"].includes(backend)) throw new InvalidOptionError("backend", '"auto", "mlx" or "gguf"', backend);
  const info = await stat(path).catch(() => undefined);
  if (!info) throw new ModelNotFoundError(path);
  const isGguf = info.isFile() && path.toLowerCase().endsWith(".gguf");
  if (backend === "gguf") return { backend: "gguf", reason: "requested with backend: \"gguf\"" };
  if (backend === "mlx") {
    const mlx = mlxAvailability();
    if (!mlx.available) throw new BackendUnavailableError("mlx", mlx.reason);
    return { backend: "mlx", reason: "requested with backend: \"mlx\"" };
  }
  if (isGguf) return { backend: "gguf", reason: "the path is a .gguf file" };
  if (!info.isDirectory()) {
    throw new ModelNotFoundError(path, "expected a .gguf file or a model directory with config.json");
  }
  const mlx = mlxAvailability();
  if (!mlx.available) {
    throw new BackendUnavailableError(
      "mlx",
      `${mlx.reason}. A model directory needs the MLX engine; on this machine, use a .gguf file (GGUF backend) instead`,
    );
  }
  return { backend: "mlx", reason: "the path is a model directory and the MLX engine is available" };
}

/**
 * Loads a model with the right backend. `model` is a local path (a `.gguf` file or a model
 * directory; an existing path always wins) or a Hugging Face name: `owner/name` (an MLX/HF
 * repository), `hf:owner/name/file.gguf`, `hf:owner/name:Q4_K_M`, each with an optional
 * `@revision` after the repository. A name is fetched into the shared Hugging Face cache first
 * (see `pullModel`), or taken from it when already there.
 *
 * @example
 * ```ts
 * import { loadModel } from "mlx-node";
 * const model = await loadModel("./stories260K.gguf");
 * console.log(model.name, model.selection.reason);
 * const { text } = await model.generate("Once upon a time", { maxTokens: 32 });
 * await model.unload();
 * ```
 * @throws ModelNotFoundError, BackendUnavailableError, InvalidOptionError, ModelFormatError, UnsupportedArchitectureError,
 *   and for names HubAccessError, DownloadError
 */
export async function loadModel(model: string, options: LoadModelOptions = {}): Promise<LoadedModel> {
  const { backend = "auto", maxQueuedRequests, onProgress, hub, ...loadOptions } = options;
  const { path: modelPath } = await resolveModel(checkModelPath(model), { ...hub, onProgress, signal: loadOptions.signal });
  const selection = await chooseBackend(modelPath, backend);
  const instance = selection.backend === "mlx" ? new MlxBackend({ maxQueuedRequests }) : new GgufBackend({ maxQueuedRequests });
  await instance.load(modelPath, loadOptions);
  return Object.assign(instance, { selection }) as LoadedModel;
}

export type { InferenceBackend };
