/**
 * `jsonSchema` on the GGUF backend. llama.cpp's native grammar sampler does the masking, with a
 * GBNF grammar generated from the schema (gbnf.ts: the automaton's language). Our automaton
 * follows the same tokens to know when the document is complete (generation then stops at once)
 * and how much room finishing it needs: once the budget gets tight, the tokens the grammar would
 * still allow but that leave too little room are banned with a token bias.
 */
import type { Llama, LlamaGrammar, LlamaModel, SequenceEvaluateOptions, Token, TokenBias } from "node-llama-cpp";
import { JsonGenerationDriver } from "./driver.js";
import { jsonSchemaToGbnf } from "./gbnf.js";
import type { CompiledJsonSchema } from "./schema.js";
import { tokenConstraint } from "./token-constraint.js";
import { vocabularyFromGguf, type TokenVocabulary } from "./vocab.js";

/** What a GGUF run needs for one constrained generation. */
export interface GgufJsonRun {
  /** Follows the tokens; push every generated token, stop when `finished`. */
  driver: JsonGenerationDriver;
  /** Options to merge into `sequence.evaluate`. */
  evaluateOptions: Pick<SequenceEvaluateOptions, "grammarEvaluationState" | "tokenBias">;
}

const grammars = new WeakMap<Llama, Map<string, Promise<LlamaGrammar>>>();
/** Per model: its vocabulary, and the ids with no text (control tokens) that are always banned. */
const vocabularies = new WeakMap<LlamaModel, { vocab: TokenVocabulary; noText: Token[] }>();

/**
 * Sets up one constrained generation of at most `budget` tokens.
 * @throws MlxNodeError `GGUF_ERROR` for a tokenizer that is neither SentencePiece nor byte-level BPE.
 */
export async function ggufJsonRun(llama: Llama, model: LlamaModel, schema: CompiledJsonSchema, budget: number): Promise<GgufJsonRun> {
  const lib = await import("node-llama-cpp");
  let known = vocabularies.get(model);
  if (!known) {
    const tokens = model.tokens;
    const eos = [tokens.eos, tokens.eot].filter((t): t is Token => t !== null);
    const vocab = vocabularyFromGguf(model.fileInfo.metadata?.tokenizer?.ggml ?? {}, eos);
    // llama.cpp's grammar reads control tokens (BOS, <unk>, chat markers) as their text, which a
    // string would accept: they are banned always (end-of-generation tokens are the grammar's business).
    const noText: Token[] = [];
    for (let id = 0; id < vocab.size; id++) if (!vocab.bytes[id]?.length && !eos.includes(id as Token)) noText.push(id as Token);
    known = { vocab, noText };
    vocabularies.set(model, known);
  }
  const { vocab, noText } = known;
  // Lax UTF-8: the automaton must accept every byte sequence llama.cpp's grammar lets through.
  const driver = new JsonGenerationDriver(tokenConstraint(schema, vocab, { strictUtf8: false }), budget);
  const grammar = await grammarFor(llama, schema);
  const baseBias = new lib.TokenBias(model.tokenizer).set(noText, "never");
  const tokenBias = (): TokenBias => {
    const banned = driver.overBudget();
    return banned.length === 0 ? baseBias : new lib.TokenBias(model.tokenizer).set([...noText, ...banned] as Token[], "never");
  };
  return {
    driver,
    evaluateOptions: { grammarEvaluationState: new lib.LlamaGrammarEvaluationState({ model, grammar }), tokenBias },
  };
}

function grammarFor(llama: Llama, schema: CompiledJsonSchema): Promise<LlamaGrammar> {
  let byKey = grammars.get(llama);
  if (!byKey) grammars.set(llama, (byKey = new Map()));
  let grammar = byKey.get(schema.key);
  if (!grammar) {
    grammar = llama.createGrammar({ grammar: jsonSchemaToGbnf(schema) });
    grammar.catch(() => byKey.delete(schema.key));
    // Grammars are small; keep the most recent few dozen.
    if (byKey.size >= 32) byKey.delete(byKey.keys().next().value as string);
    byKey.set(schema.key, grammar);
  }
  return grammar;
}
