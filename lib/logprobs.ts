/**
 * Token log-probabilities (`logprobs`, `topLogprobs`): what the engines report per generated
 * token, and how token ids become the text and bytes callers see.
 *
 * Both engines report the log-softmax of the distribution the token was drawn from: the model's
 * logits after the repetition penalty and the jsonSchema/tool-call mask, and, with temperature > 0,
 * after the topK/topP/minP filters and divided by the temperature. With the default sampling
 * options that is the model's own log-softmax, which is what OpenAI reports.
 */
import { MlxError } from "./errors.js";
import type { TokenVocabulary } from "./json-schema/vocab.js";

/** Most alternatives `topLogprobs` may ask for (OpenAI's limit). */
export const MAX_TOP_LOGPROBS = 20;

/** A token id with its log-probability, as an engine reports it. */
export interface EngineAlternative {
  id: number;
  logprob: number;
}

/** One generated token's log-probabilities as an engine reports them. */
export interface EngineLogprob {
  logprob: number;
  /** The most likely tokens, most likely first; tokens the draw could not pick are left out. */
  top: EngineAlternative[];
}

/** Generated token ids of one engine step or more, with their log-probabilities when asked for. */
export interface TokenBatch {
  ids: number[];
  /** One entry per id (only with the `logprobs` option). */
  logprobs?: EngineLogprob[];
}

/** A token with its log-probability. */
export interface TokenLogprob {
  /** Token id. */
  id: number;
  /**
   * The token's text: its bytes decoded as UTF-8 (a token holding only part of a character shows
   * U+FFFD; `bytes` are exact). A special token's text is its vocabulary entry, e.g. `</s>`.
   */
  token: string;
  /** The token's UTF-8 bytes. */
  bytes: number[];
  /** Natural logarithm of its probability (≤ 0). */
  logprob: number;
}

/** A generated token's log-probability and the most likely tokens at its position. */
export interface GeneratedTokenLogprob extends TokenLogprob {
  /**
   * The `topLogprobs` most likely tokens at this position, most likely first (the generated token
   * among them when it is one of them). Fewer when the sampling filters or a mask left fewer.
   */
  topLogprobs: TokenLogprob[];
}

/** The text and bytes of token ids. */
export class TokenPieces {
  private readonly decoder = new TextDecoder("utf-8");
  private readonly cache = new Map<number, { token: string; bytes: number[] }>();

  /**
   * @param vocabulary the bytes of ordinary tokens (lib/json-schema/vocab.ts)
   * @param entry the vocabulary entry of an id, for the tokens that have no bytes (special ones)
   */
  constructor(
    private readonly vocabulary: TokenVocabulary,
    private readonly entry: (id: number) => string | undefined,
  ) {}

  piece(id: number): { token: string; bytes: number[] } {
    let piece = this.cache.get(id);
    if (!piece) {
      const raw = this.vocabulary.bytes[id];
      if (raw) piece = { token: this.decoder.decode(raw), bytes: [...raw] };
      else {
        const token = this.entry(id) ?? "";
        piece = { token, bytes: [...new TextEncoder().encode(token)] };
      }
      this.cache.set(id, piece);
    }
    return piece;
  }

  /** An engine's report of token `id` as callers see it. */
  describe(id: number, report: EngineLogprob): GeneratedTokenLogprob {
    return {
      id,
      ...this.piece(id),
      logprob: report.logprob,
      topLogprobs: report.top.map((t) => ({ id: t.id, ...this.piece(t.id), logprob: t.logprob })),
    };
  }
}

/**
 * A token the constraint forced (the only one its mask allowed), appended without sampling: the
 * distribution it was drawn from is that one token.
 */
export function forcedLogprob(id: number): EngineLogprob {
  return { logprob: 0, top: [{ id, logprob: 0 }] };
}

/**
 * The MLX engine's flat report (native/sampling_params.h EmittedToken): per token `1 + 2n` floats,
 * `[logprob, n top logprobs, n top ids]`. Entries at -Infinity (filtered out or masked) are dropped.
 */
export function fromNativeLogprobs(values: Float32Array, count: number, n: number): EngineLogprob[] {
  const stride = 1 + 2 * n;
  if (values.length !== count * stride) throw new MlxError(`native logprobs: ${values.length} values for ${count} tokens of ${stride}`);
  const out: EngineLogprob[] = [];
  for (let i = 0; i < count; i++) {
    const base = i * stride;
    const top: EngineAlternative[] = [];
    for (let k = 0; k < n; k++) {
      const logprob = values[base + 1 + k];
      if (logprob !== -Infinity) top.push({ id: values[base + 1 + n + k], logprob });
    }
    out.push({ logprob: values[base], top });
  }
  return out;
}
