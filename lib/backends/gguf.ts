/** The GGUF backend (node-llama-cpp); its parts are in ./gguf/. */
export { DEFAULT_GGUF_MAX_BATCH, GgufBackend, type GgufBackendOptions, type GgufLoadOptions } from "./gguf/backend.js";
export {
  decodeThreadCandidates, DecodeThreadTuner, defaultGgufThreads, prefillThreadsFor, SMALL_MODEL_BYTES, TINY_MODEL_BYTES,
  TINY_MODEL_MIN_PARALLEL_BATCH, type GgufThreadCounts,
} from "./gguf/threads.js";
