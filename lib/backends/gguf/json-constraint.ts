/**
 * `jsonSchema` on the GGUF backend, with the same token constraint as MLX: before each sample,
 * node-llama-cpp asks for a token bias, and every token the mask does not allow gets "never"
 * (llama.cpp then samples among the allowed ones with the usual samplers). The ban list of a
 * state is built once and kept while the budget is not tight.
 */
import type { LlamaModel, SequenceEvaluateOptions, Token, TokenBias } from "node-llama-cpp";
import { GgufError } from "../../errors.js";
import { JsonGenerationDriver } from "../../json-schema/driver.js";
import type { CompiledJsonSchema } from "../../json-schema/schema.js";
import { tokenConstraint } from "../../json-schema/token-constraint.js";
import { vocabularyFromGguf, type TokenVocabulary } from "../../json-schema/vocab.js";

/** What a GGUF run needs for one constrained generation. */
export interface GgufJsonRun {
  /** Follows the tokens; push every generated token, stop when `finished`. */
  driver: JsonGenerationDriver;
  /** Options to merge into `sequence.evaluate`. */
  evaluateOptions: Pick<SequenceEvaluateOptions, "tokenBias">;
}

/** Per model: its vocabulary. */
const vocabularies = new WeakMap<LlamaModel, TokenVocabulary>();
/** Per constraint: the bias of each state when the budget is not tight. */
const stateBiases = new WeakMap<object, Map<number, TokenBias>>();

/**
 * The bytes of a GGUF model's tokens, read from its metadata once per model.
 * @throws MlxNodeError `GGUF_ERROR` for a tokenizer that is neither SentencePiece nor byte-level BPE.
 */
export function ggufVocabulary(model: LlamaModel): TokenVocabulary {
  let vocab = vocabularies.get(model);
  if (!vocab) {
    const tokens = model.tokens;
    const eos = [tokens.eos, tokens.eot].filter((t): t is Token => t !== null);
    vocab = vocabularyFromGguf(model.fileInfo.metadata?.tokenizer?.ggml ?? {}, eos);
    vocabularies.set(model, vocab);
  }
  return vocab;
}

/**
 * Sets up one constrained generation of at most `budget` tokens.
 * @throws MlxNodeError `GGUF_ERROR` for a tokenizer that is neither SentencePiece nor byte-level BPE.
 */
export async function ggufJsonRun(model: LlamaModel, schema: CompiledJsonSchema, budget: number): Promise<GgufJsonRun> {
  const lib = await import("node-llama-cpp");
  const vocab = ggufVocabulary(model);
  const driver = new JsonGenerationDriver(tokenConstraint(schema, vocab), budget);
  let cache = stateBiases.get(driver.constraint);
  if (!cache) stateBiases.set(driver.constraint, (cache = new Map()));
  const size = vocab.size;
  const biasOf = (mask: Uint32Array): TokenBias => {
    const bias = new lib.TokenBias(model.tokenizer);
    // TokenBias.set skips end-of-generation tokens, which must be banned too while the document
    // is open: the bias map (read by node-llama-cpp as token → logit bias) is filled directly.
    const biases = (bias as unknown as { _biases?: Map<number, number> })._biases;
    if (!(biases instanceof Map)) throw new GgufError("jsonSchema: node-llama-cpp's TokenBias has changed shape; tokens cannot be banned");
    for (let id = 0; id < size; id++) if (!(mask[id >>> 5] & (1 << (id & 31)))) biases.set(id, -Infinity);
    return bias;
  };
  const free = new lib.TokenBias(model.tokenizer);
  const tokenBias = (): TokenBias => {
    const mask = driver.mask();
    if (!driver.constraining) return free;
    if (!mask) return biasOf(new Uint32Array(Math.ceil(size / 32)));
    if (!driver.tight) {
      let bias = cache.get(driver.state);
      if (!bias) cache.set(driver.state, (bias = biasOf(mask)));
      return bias;
    }
    return biasOf(mask);
  };
  return { driver, evaluateOptions: { tokenBias } };
}
