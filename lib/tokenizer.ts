/**
 * Hugging Face tokenizers for model directories (`tokenizer.json` plus its config files), built on
 * `@huggingface/tokenizers`. Loading parses everything once; `encode` and `decode` only run the
 * tokenizer itself, so they are cheap enough for the streaming hot path.
 */
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import type { TokenizeOptions } from "./backend.js";
import { InvalidOptionError, MlxNodeError, ModelNotFoundError, TokenizerError } from "./errors.js";

/** Options for {@link Tokenizer.decode}. */
export interface DecodeOptions {
  /**
   * Leave out special tokens (BOS, EOS, `<|eot_id|>`, padding and the like) from the text.
   * Defaults to true.
   */
  skipSpecialTokens?: boolean;
}

/**
 * The part of `@huggingface/tokenizers`' `Tokenizer` that is used here. The package's own type
 * declarations use extensionless relative imports, which do not resolve under `NodeNext`, so its
 * class arrives typed as `any`; this interface restores the checking.
 */
interface HfTokenizerApi {
  encode(text: string, options: { add_special_tokens: boolean }): { ids: number[] };
  decode(ids: number[], options: { skip_special_tokens: boolean; clean_up_tokenization_spaces: boolean }): string;
  token_to_id(token: string): number | undefined;
  model: { vocab: (string | undefined)[] };
}

type JsonObject = Record<string, unknown>;

/** Largest tokenizer or config file read (the largest real tokenizer.json files are about 35 MB). */
const MAX_TOKENIZER_FILE_BYTES = 512 * 2 ** 20;

/** tokenizer.json `model.type`s that @huggingface/tokenizers implements. */
const SUPPORTED_MODEL_TYPES: readonly string[] = ["BPE", "WordPiece", "Unigram"];

/** Text used once at load time to find which ids the post-processor puts around a sequence. */
const PROBE_TEXT = "a";

/**
 * A Hugging Face tokenizer loaded from a model directory.
 *
 * @example
 * ```ts
 * const tokenizer = await Tokenizer.fromDirectory("models/stories260K/hf-f32");
 * const ids = tokenizer.encode("Once upon a time", { addSpecialTokens: true }); // [1, 403, 407, 261, 378]
 * tokenizer.decode(ids); // "Once upon a time"
 * ```
 */
export class Tokenizer {
  /** The model directory this tokenizer was loaded from. */
  readonly directory: string;
  /** Number of token ids the tokenizer knows (the highest id, added tokens included, plus one). */
  readonly vocabSize: number;
  /** The beginning-of-sequence token string (such as `<s>` or `<|begin_of_text|>`), when the model has one. */
  readonly bosToken: string | undefined;
  /** The id of {@link Tokenizer.bosToken}, when the model has one. */
  readonly bosTokenId: number | undefined;
  /**
   * The end-of-sequence token string from `tokenizer_config.json` (the `eos_token` chat templates
   * use), or the token of the first of {@link Tokenizer.eosTokenIds} when the config names none.
   */
  readonly eosToken: string | undefined;
  /**
   * Every id that ends generation: the union, in this order and without repeats, of
   * `generation_config.json` `eos_token_id` (a number or a list), `config.json` `eos_token_id` and
   * the id of `tokenizer_config.json` `eos_token`. Empty when none of them is set.
   */
  readonly eosTokenIds: number[];
  /** The unknown-token string, when the model has one. */
  readonly unkToken: string | undefined;
  /** The padding token string, when the model has one. */
  readonly padToken: string | undefined;
  /**
   * The default Jinja chat template: `chat_template.jinja` when the directory has one, otherwise
   * `tokenizer_config.json` `chat_template` (a string, or the entry named `default` of a list of
   * `{ name, template }`). Undefined for models without a template.
   */
  readonly chatTemplate: string | undefined;
  /** Every named chat template (for example `default` and `tool_use`), including the default one under `default`. */
  readonly chatTemplates: Readonly<Record<string, string>>;
  /** Whether `encode(text, { addSpecialTokens: true })` puts {@link Tokenizer.bosTokenId} first. */
  readonly addsBosToken: boolean;

  readonly #hf: HfTokenizerApi;
  readonly #vocab: (string | undefined)[];
  readonly #specialIds: ReadonlySet<number>;
  /** Ids added before and after the text when special tokens are requested; undefined: run the post-processor. */
  readonly #prefix: readonly number[] | undefined;
  readonly #suffix: readonly number[];

  private constructor(directory: string, files: TokenizerFiles) {
    const { tokenizerJson, tokenizerConfig: config, specialTokensMap, generationConfig, modelConfig } = files;
    this.directory = directory;

    const bosName = tokenContent(config.bos_token) ?? tokenContent(specialTokensMap.bos_token);
    const eosName = tokenContent(config.eos_token) ?? tokenContent(specialTokensMap.eos_token);
    this.unkToken = tokenContent(config.unk_token) ?? tokenContent(specialTokensMap.unk_token);
    this.padToken = tokenContent(config.pad_token) ?? tokenContent(specialTokensMap.pad_token);

    // The JS library reads a few tokenizer_config keys and expects the special tokens as strings.
    const hfConfig: JsonObject = { ...config, bos_token: bosName, eos_token: eosName, unk_token: this.unkToken, pad_token: this.padToken };
    const hfJson: JsonObject = { normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, added_tokens: [], ...tokenizerJson };
    hfJson.pre_tokenizer = digitsAsNumericSplit(hfJson.pre_tokenizer);
    try {
      this.#hf = new HfTokenizer(hfJson, hfConfig) as HfTokenizerApi;
    } catch (error) {
      throw new TokenizerError(`Unsupported tokenizer in ${files.tokenizerPath}: ${messageOf(error)}`, { cause: error });
    }
    matchNormalizedTokensOnlyNormalized(this.#hf);
    this.#vocab = this.#hf.model.vocab;
    this.vocabSize = this.#vocab.length;

    const idOf = (token: string | undefined): number | undefined => (token === undefined ? undefined : this.#hf.token_to_id(token));

    // EOS: generation_config first (what generation really stops on), then config.json, then the tokenizer's eos_token.
    const eos: number[] = [];
    const addEos = (id: number | undefined): void => {
      if (id !== undefined && Number.isInteger(id) && id >= 0 && !eos.includes(id)) eos.push(id);
    };
    for (const id of idList(generationConfig.eos_token_id)) addEos(id);
    for (const id of idList(modelConfig.eos_token_id)) addEos(id);
    if (isObject(modelConfig.text_config)) for (const id of idList(modelConfig.text_config.eos_token_id)) addEos(id);
    addEos(idOf(eosName));
    this.eosTokenIds = eos;
    this.eosToken = eosName ?? (eos.length > 0 ? this.idToToken(eos[0]) : undefined);

    const bosFromConfig = idList(generationConfig.bos_token_id)[0] ?? idList(modelConfig.bos_token_id)[0];
    this.bosTokenId = idOf(bosName) ?? (bosFromConfig !== undefined && this.#vocab[bosFromConfig] !== undefined ? bosFromConfig : undefined);
    this.bosToken = bosName ?? (this.bosTokenId !== undefined ? this.idToToken(this.bosTokenId) : undefined);

    // Special ids, skipped by decode(): added tokens marked special plus the named special tokens (as transformers does).
    const special = new Set<number>();
    const addedTokens = Array.isArray(tokenizerJson.added_tokens) ? tokenizerJson.added_tokens : [];
    for (const token of addedTokens) {
      if (isObject(token) && token.special === true && typeof token.id === "number") special.add(token.id);
    }
    const extra = Array.isArray(config.additional_special_tokens) ? config.additional_special_tokens : [];
    for (const name of [bosName, eosName, this.unkToken, this.padToken, ...extra.map(tokenContent)]) {
      const id = idOf(name);
      if (id !== undefined) special.add(id);
    }
    this.#specialIds = special;

    // What the post-processor adds around a single sequence (TemplateProcessing, Bert, Roberta are
    // all fixed ids before and after it): found once here, so encode() never runs it again.
    let prefix: number[] | undefined;
    let suffix: number[] = [];
    let plain: number[], full: number[];
    try {
      plain = this.#hf.encode(PROBE_TEXT, { add_special_tokens: false }).ids;
      full = this.#hf.encode(PROBE_TEXT, { add_special_tokens: true }).ids;
    } catch (error) {
      throw new TokenizerError(`Unsupported tokenizer in ${files.tokenizerPath}: ${messageOf(error)}`, { cause: error });
    }
    // A tokenizer that turns "a" into nothing, or into ids outside its vocabulary, could serve no request.
    if (plain.length === 0 || full.length === 0 || ![...plain, ...full].every((id) => Number.isInteger(id) && id >= 0 && id < this.vocabSize)) {
      throw new TokenizerError(`Unsupported tokenizer in ${files.tokenizerPath}: it encodes "${PROBE_TEXT}" as ${JSON.stringify(full)}`);
    }
    const at = plain.length > 0 ? indexOfRun(full, plain) : -1;
    if (at >= 0) {
      prefix = full.slice(0, at);
      suffix = full.slice(at + plain.length);
      // tokenizer_config's add_bos_token / add_eos_token win over tokenizer.json, as in transformers' Llama and Gemma tokenizers.
      const bosId = this.bosTokenId;
      if (typeof config.add_bos_token === "boolean" && bosId !== undefined) {
        if (config.add_bos_token && prefix[0] !== bosId) prefix.unshift(bosId);
        if (!config.add_bos_token && prefix[0] === bosId) prefix.shift();
      }
      const eosId = idOf(eosName);
      if (typeof config.add_eos_token === "boolean" && eosId !== undefined) {
        if (config.add_eos_token && suffix[suffix.length - 1] !== eosId) suffix.push(eosId);
        if (!config.add_eos_token && suffix[suffix.length - 1] === eosId) suffix.pop();
      }
    }
    this.#prefix = prefix;
    this.#suffix = suffix;
    this.addsBosToken = prefix !== undefined ? this.bosTokenId !== undefined && prefix[0] === this.bosTokenId : full[0] === this.bosTokenId;

    const templates = chatTemplatesOf(config.chat_template);
    if (files.chatTemplateFile !== undefined) templates.default = files.chatTemplateFile;
    this.chatTemplates = Object.freeze(templates);
    this.chatTemplate = templates.default;
  }

  /**
   * Loads the tokenizer of a Hugging Face model directory. Reads `tokenizer.json` (required) and,
   * when present, `tokenizer_config.json`, `special_tokens_map.json`, `generation_config.json`,
   * `config.json` and `chat_template.jinja`.
   *
   * @param dir the model directory.
   * @throws {InvalidOptionError} `dir` is not a non-empty string.
   * @throws {ModelNotFoundError} the directory does not exist, is not a directory, or has no `tokenizer.json`.
   * @throws {MlxNodeError} code `TOKENIZER_ERROR`: a file is not valid JSON, not a JSON object, cannot
   *   be read, or describes a tokenizer that `@huggingface/tokenizers` does not support. The message names the file.
   */
  static async fromDirectory(dir: string): Promise<Tokenizer> {
    if (typeof dir !== "string" || dir.length === 0) throw new InvalidOptionError("dir", "a directory path", dir);
    let isDirectory: boolean;
    try {
      isDirectory = (await stat(dir)).isDirectory();
    } catch (error) {
      if (isNotFound(error)) throw new ModelNotFoundError(dir, "the directory does not exist");
      throw new TokenizerError(`Cannot read ${dir}: ${messageOf(error)}`, { cause: error });
    }
    if (!isDirectory) throw new ModelNotFoundError(dir, "not a directory");

    const tokenizerPath = join(dir, "tokenizer.json");
    const [tokenizerJson, tokenizerConfig, specialTokensMap, generationConfig, modelConfig, chatTemplateFile] = await Promise.all([
      readJson(tokenizerPath),
      readJson(join(dir, "tokenizer_config.json")),
      readJson(join(dir, "special_tokens_map.json")),
      readJson(join(dir, "generation_config.json")),
      readJson(join(dir, "config.json")),
      readText(join(dir, "chat_template.jinja")),
    ]);
    if (tokenizerJson === undefined) throw new ModelNotFoundError(tokenizerPath, "the model directory has no tokenizer.json");
    if (!isObject(tokenizerJson.model)) {
      throw new TokenizerError(`Invalid ${tokenizerPath}: it has no "model" object`);
    }
    // Refuse an unknown model type now, naming it, rather than at the first request. Without a
    // type, @huggingface/tokenizers infers one from the fields, as the Rust library does.
    const modelType = tokenizerJson.model.type;
    if (modelType !== undefined && !(typeof modelType === "string" && SUPPORTED_MODEL_TYPES.includes(modelType))) {
      throw new TokenizerError(
        `Unsupported tokenizer in ${tokenizerPath}: model type ${JSON.stringify(modelType)} (supported: ${SUPPORTED_MODEL_TYPES.join(", ")})`,
      );
    }
    // Token ids must be ids: the library would accept any JSON value and fail only at encode time.
    const vocab = tokenizerJson.model.vocab;
    const entries = Array.isArray(vocab) ? vocab.map((entry, id) => [Array.isArray(entry) ? entry[0] : entry, id] as const) : isObject(vocab) ? Object.entries(vocab) : [];
    const bad = entries.find(([token, id]) => typeof token !== "string" || !(Number.isInteger(id) && (id as number) >= 0));
    if (bad) {
      throw new TokenizerError(`Invalid ${tokenizerPath}: vocabulary entry ${JSON.stringify(bad[0])} has id ${JSON.stringify(bad[1])}, not a token id`);
    }
    return new Tokenizer(dir, {
      tokenizerPath,
      tokenizerJson,
      tokenizerConfig: tokenizerConfig ?? {},
      specialTokensMap: specialTokensMap ?? {},
      generationConfig: generationConfig ?? {},
      modelConfig: modelConfig ?? {},
      chatTemplateFile,
    });
  }

  /**
   * Turns text into token ids. Special tokens written in the text (such as `<|eot_id|>` or `<s>`)
   * become their ids.
   *
   * @param text the text to encode.
   * @param options.addSpecialTokens add what the model expects around a sequence, usually just BOS:
   *   `tokenizer_config.json` `add_bos_token`/`add_eos_token` when set, otherwise `tokenizer.json`'s
   *   post-processor. Leave it off for text that already starts with BOS, such as a rendered chat
   *   template. Defaults to false.
   * @returns the token ids.
   * @throws {InvalidOptionError} `text` is not a string or `addSpecialTokens` is not a boolean.
   * @throws {MlxNodeError} code `TOKENIZER_ERROR`: the tokenizer itself failed.
   */
  encode(text: string, options?: TokenizeOptions): number[] {
    if (typeof text !== "string") throw new InvalidOptionError("text", "a string", text);
    const add = options?.addSpecialTokens ?? false;
    if (typeof add !== "boolean") throw new InvalidOptionError("addSpecialTokens", "a boolean", add);
    const prefix = this.#prefix;
    try {
      if (add && prefix === undefined) return this.#hf.encode(text, { add_special_tokens: true }).ids;
      const ids = text.length === 0 ? [] : this.#hf.encode(text, { add_special_tokens: false }).ids;
      if (!add || prefix === undefined || (prefix.length === 0 && this.#suffix.length === 0)) return ids;
      return [...prefix, ...ids, ...this.#suffix];
    } catch (error) {
      throw new TokenizerError(`Cannot encode text: ${messageOf(error)}`, { cause: error });
    }
  }

  /**
   * Turns token ids into text. Ids the tokenizer does not know (such as the padding rows of a
   * larger embedding matrix) are left out, as Hugging Face `tokenizers` does. An incomplete UTF-8
   * character at the end appears as U+FFFD; use a `StreamingDetokenizer` to stream text.
   * Tokenization spaces are never "cleaned up" (`clean_up_tokenization_spaces` is ignored): the
   * clean-up is lossy and would rewrite text that was already streamed.
   *
   * @param ids the token ids.
   * @param options.skipSpecialTokens leave special tokens out of the text. Defaults to true.
   * @returns the text.
   * @throws {InvalidOptionError} an id is not an integer, or `ids` is not an array.
   * @throws {MlxNodeError} code `TOKENIZER_ERROR`: the tokenizer itself failed.
   */
  decode(ids: readonly number[], options?: DecodeOptions): string {
    if (!Array.isArray(ids)) throw new InvalidOptionError("ids", "an array of token ids", ids);
    const skip = options?.skipSpecialTokens ?? true;
    const vocab = this.#vocab;
    const kept: number[] = [];
    for (const id of ids) {
      if (!Number.isInteger(id)) throw new InvalidOptionError("ids", "integer token ids", id);
      if (vocab[id] === undefined || (skip && this.#specialIds.has(id))) continue;
      kept.push(id);
    }
    if (kept.length === 0) return "";
    try {
      return this.#hf.decode(kept, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    } catch (error) {
      throw new TokenizerError(`Cannot decode token ids: ${messageOf(error)}`, { cause: error });
    }
  }

  /**
   * The id of a token string (a vocabulary entry such as `▁Hello` or `<|eot_id|>`, not arbitrary text).
   * @returns the id, or undefined when the vocabulary has no such token.
   */
  tokenToId(token: string): number | undefined {
    return this.#hf.token_to_id(token);
  }

  /**
   * The vocabulary entry of an id (raw, as in `tokenizer.json`: `▁Hello`, `ĠHello`, `<0xF0>`).
   * @returns the token string, or undefined for an unknown id.
   */
  idToToken(id: number): string | undefined {
    return Number.isInteger(id) ? this.#vocab[id] : undefined;
  }

  /** Whether `id` is a special token (one that `decode` leaves out by default). */
  isSpecialToken(id: number): boolean {
    return this.#specialIds.has(id);
  }
}

/**
 * An added token marked `normalized: true` is matched in normalized text by its normalized form
 * (llama2's `<s>` is matched as "▁<s>" after the "Prepend ▁" normalizer), as the Rust library does.
 * `@huggingface/tokenizers` 0.2.0 also keeps the raw content in its token map, so a leftover piece
 * of normalized text that equals it ("<s>" right after a matched "▁<s>") became the token, where
 * transformers keeps it as text. Dropping those raw entries from the map fixes that; ids still come
 * from the model vocabulary, which holds every added token. Touches the library's `added_tokens_map`
 * only when it has the shape of 0.2.0.
 */
function matchNormalizedTokensOnlyNormalized(hf: HfTokenizerApi): void {
  const lib = hf as unknown as {
    added_tokens?: { content: string; normalized: boolean }[];
    added_tokens_map?: Map<string, unknown>;
    normalizer?: ((text: string) => string) | null;
  };
  const { added_tokens: added, added_tokens_map: map, normalizer } = lib;
  if (!Array.isArray(added) || !(map instanceof Map) || typeof normalizer !== "function") return;
  for (const token of added) {
    if (token.normalized && normalizer(token.content) !== token.content && map.has(normalizer(token.content))) map.delete(token.content);
  }
}

/**
 * The `Digits` pre-tokenizer splits off Unicode numerics (Rust's `char::is_numeric`: `\p{N}`, so "½",
 * "①" and "Ⅻ" too, as llama.cpp's `\p{N}`); `@huggingface/tokenizers` 0.2.0 matches only ASCII `\d`,
 * which gave SmolLM2 other ids than transformers and llama.cpp on such text. Rewritten as the
 * equivalent `Split` (match mode) over `\p{N}`, wherever it sits in a `Sequence`.
 */
function digitsAsNumericSplit(preTokenizer: unknown): unknown {
  if (!isObject(preTokenizer)) return preTokenizer;
  if (preTokenizer.type === "Sequence" && Array.isArray(preTokenizer.pretokenizers)) {
    return { ...preTokenizer, pretokenizers: preTokenizer.pretokenizers.map(digitsAsNumericSplit) };
  }
  if (preTokenizer.type !== "Digits") return preTokenizer;
  const digits = preTokenizer.individual_digits === true ? "\\p{N}" : "\\p{N}+";
  return { type: "Split", pattern: { Regex: `[^\\p{N}]+|${digits}` }, behavior: "Isolated", invert: true };
}

interface TokenizerFiles {
  tokenizerPath: string;
  tokenizerJson: JsonObject;
  tokenizerConfig: JsonObject;
  specialTokensMap: JsonObject;
  generationConfig: JsonObject;
  modelConfig: JsonObject;
  chatTemplateFile: string | undefined;
}

/** Reads an optional text file: undefined when it does not exist. */
async function readText(path: string): Promise<string | undefined> {
  try {
    // Only a regular file of bounded size: a symlink to /dev/zero must not be read forever.
    const info = await stat(path);
    if (!info.isFile() || info.size > MAX_TOKENIZER_FILE_BYTES) {
      throw new TokenizerError(`Cannot read ${path}: ${info.isFile() ? `larger than ${MAX_TOKENIZER_FILE_BYTES >> 20} MiB` : "not a regular file"}`);
    }
    return await readFile(path, "utf8");
  } catch (error) {
    if (isNotFound(error)) return undefined;
    if (error instanceof MlxNodeError) throw error;
    throw new TokenizerError(`Cannot read ${path}: ${messageOf(error)}`, { cause: error });
  }
}

/** Reads a JSON object file: undefined when it does not exist. */
async function readJson(path: string): Promise<JsonObject | undefined> {
  const text = await readText(path);
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
  } catch (error) {
    throw new TokenizerError(`Cannot parse ${path}: ${messageOf(error)}`, { cause: error });
  }
  if (!isObject(value)) throw new TokenizerError(`Invalid ${path}: expected a JSON object`);
  return value;
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isNotFound(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === "ENOENT" || code === "ENOTDIR";
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A special token as configs write it: a string, an `{ content }` object (AddedToken), or null. */
function tokenContent(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (isObject(value) && typeof value.content === "string") return value.content;
  return undefined;
}

/** An `eos_token_id`-style value (a number, a list of numbers, or null) as a list. */
function idList(value: unknown): number[] {
  const list = Array.isArray(value) ? value : [value];
  return list.filter((id): id is number => typeof id === "number" && Number.isInteger(id) && id >= 0);
}

/** `chat_template` as a string, a list of `{ name, template }`, or a name → template record. */
function chatTemplatesOf(value: unknown): Record<string, string> {
  const templates: Record<string, string> = {};
  if (typeof value === "string") {
    templates.default = value;
  } else if (Array.isArray(value)) {
    for (const entry of value) {
      if (isObject(entry) && typeof entry.name === "string" && typeof entry.template === "string") templates[entry.name] = entry.template;
    }
  } else if (isObject(value)) {
    for (const [name, template] of Object.entries(value)) if (typeof template === "string") templates[name] = template;
  }
  return templates;
}

/** Index of the first occurrence of `run` inside `list`, or -1. */
function indexOfRun(list: readonly number[], run: readonly number[]): number {
  outer: for (let i = 0; i + run.length <= list.length; i++) {
    for (let j = 0; j < run.length; j++) if (list[i + j] !== run[j]) continue outer;
    return i;
  }
  return -1;
}
