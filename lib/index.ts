/**
 * mlx-node: run local language models from Node.js and Electron.
 * MLX (through mlx-c) for model directories, node-llama-cpp for GGUF files, one contract for both.
 */
export type {
  AdapterInfo, BackendName, FinishReason, GenerateChunk, GenerateOptions, GenerateResult, GenerationStream,
  InferenceBackend, JsonSchema, LoadOptions, Prompt, Timings, TokenizeOptions, Usage,
} from "./backend.js";
export { MAX_TOP_LOGPROBS, type GeneratedTokenLogprob, type TokenLogprob } from "./logprobs.js";
export { SAMPLING_PARAMETERS, type SamplingOptions, type SamplingParameter, type SamplingParameterName } from "./sampling.js";
export { minimumMaxTokens, SCHEMA_LIMITS, MAX_NESTING } from "./json-schema/schema.js";
export { prepareJsonSchema } from "./json-schema/compile-async.js";
export type { BackendOptions } from "./backends/base.js";
export {
  MlxBackend, mlxAvailability, type MlxGenerationStats, type MlxLoadOptions, type MlxMemory, type MlxModelInfo, type MlxRuntimeInfo, type MlxBlasInfo,
} from "./backends/mlx.js";
export { GgufBackend, type GgufLoadOptions, type GgufThreadCounts } from "./backends/gguf.js";
export { chooseBackend, loadModel, type BackendSelection, type LoadedModel, type LoadModelOptions } from "./backends/select.js";
export { info, type BackendStatus, type PlatformInfo } from "./platform.js";
export { Tokenizer, type DecodeOptions } from "./tokenizer.js";
export { renderChat, type ChatMessage, type ChatOptions, type ChatChunk, type ChatResult, type ChatStream } from "./chat.js";
export { detectToolCallFormat, type ChatTool, type ToolCall, type ToolCallFormat, type ToolChoice, type ToolStreamDelta } from "./tools.js";
export {
  AdapterError, AlreadyLoadedError, BackendUnavailableError, BusyError, ChatTemplateError, DownloadError, ERROR_CLASSES, GgufError, HubAccessError,
  InvalidOptionError, MlxError, MlxNodeError, ModelConfigError, ModelFormatError, TokenizerError,
  ModelNotFoundError, NotLoadedError, UnloadedError, UnsupportedArchitectureError, type MlxNodeErrorCode,
} from "./errors.js";
export { pullModel, resolveModel, type PulledModel, type PullOptions, type PullProgress } from "./hub/pull.js";
export { listCachedModels, removeCachedModel, type CachedModel, type HubOptions } from "./hub/cache.js";
export { parseModelName, type HubModelName } from "./hub/names.js";
export { createServer, type RequestEndEvent, type ServerOptions } from "./server/server.js";
