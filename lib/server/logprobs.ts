/**
 * Token log-probabilities in OpenAI's wire format, both ways: the `logprobs` / `top_logprobs`
 * parameters of both endpoints to our options, and our per-token entries to
 * `choices[].logprobs` (chat: `content[]`; legacy completions: parallel arrays). Pure functions.
 */
import type { GenerateOptions } from "../backend.js";
import { MAX_TOP_LOGPROBS, type GeneratedTokenLogprob } from "../logprobs.js";
import { RequestError } from "./openai.js";

/** The options a request's logprobs parameters ask for (none when it asks for none). */
export type LogprobsOptions = Pick<GenerateOptions, "logprobs" | "topLogprobs">;

function count(value: unknown, param: string, what: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > MAX_TOP_LOGPROBS) {
    throw new RequestError(400, `"${param}" must be ${what} an integer from 0 to ${MAX_TOP_LOGPROBS}`, param);
  }
  return value;
}

/** Chat: `logprobs: boolean` and `top_logprobs: 0..20`, which needs `logprobs: true` (as OpenAI). */
export function chatLogprobsParams(body: Record<string, unknown>): LogprobsOptions {
  const on = body.logprobs ?? false;
  if (typeof on !== "boolean") throw new RequestError(400, `"logprobs" must be a boolean`, "logprobs");
  const top = body.top_logprobs;
  if (top === undefined || top === null) return on ? { logprobs: true } : {};
  const n = count(top, "top_logprobs", "");
  if (!on) throw new RequestError(400, `"top_logprobs" needs "logprobs": true`, "top_logprobs");
  return { logprobs: true, topLogprobs: n };
}

/** Legacy completions: `logprobs: n`, the alternatives per position (0: only the chosen token's). */
export function completionLogprobsParams(body: Record<string, unknown>): LogprobsOptions {
  const n = body.logprobs;
  if (n === undefined || n === null || n === false) return {};
  return { logprobs: true, topLogprobs: count(n, "logprobs", "null or") };
}

/** One entry of chat's `logprobs.content`. */
export function chatLogprobsContent(entries: readonly GeneratedTokenLogprob[]) {
  return entries.map((e) => ({
    token: e.token,
    logprob: e.logprob,
    bytes: e.bytes,
    top_logprobs: e.topLogprobs.map((t) => ({ token: t.token, logprob: t.logprob, bytes: t.bytes })),
  }));
}

/** Chat's `choices[].logprobs`: null unless asked for. */
export function chatLogprobs(entries: readonly GeneratedTokenLogprob[] | undefined) {
  return entries ? { content: chatLogprobsContent(entries), refusal: null } : null;
}

/**
 * Legacy completions' `choices[].logprobs` for `entries`, whose first token starts `offset`
 * characters into the completion (`text_offset` counts the characters of the tokens before each).
 * Each `top_logprobs` dict holds the alternatives and the chosen token (OpenAI: up to n + 1 entries);
 * tokens with the same text keep the larger logprob.
 */
export function completionLogprobs(entries: readonly GeneratedTokenLogprob[] | undefined, offset = 0) {
  if (!entries) return null;
  const textOffset: number[] = [];
  let at = offset;
  for (const e of entries) {
    textOffset.push(at);
    at += e.token.length;
  }
  return {
    tokens: entries.map((e) => e.token),
    token_logprobs: entries.map((e) => e.logprob),
    top_logprobs: entries.map((e) => {
      const best = new Map<string, number>();
      for (const t of [...e.topLogprobs, e]) best.set(t.token, Math.max(best.get(t.token) ?? -Infinity, t.logprob));
      return Object.fromEntries(best);
    }),
    text_offset: textOffset,
  };
}

/** A stream's entries not sent yet; nothing (undefined) when the request asked for no logprobs. */
export class PendingLogprobs {
  private entries: GeneratedTokenLogprob[] | undefined;
  /** Characters of the tokens already sent, where the next completion chunk's `text_offset` starts. */
  private sentChars = 0;

  add(entries: readonly GeneratedTokenLogprob[] | undefined): void {
    if (entries) (this.entries ??= []).push(...entries);
  }

  /** For a chat chunk. */
  take(): GeneratedTokenLogprob[] | undefined {
    const entries = this.entries;
    if (entries) this.entries = [];
    return entries;
  }

  /** For a legacy completion chunk. */
  takeCompletion(): ReturnType<typeof completionLogprobs> {
    const entries = this.take();
    const out = completionLogprobs(entries, this.sentChars);
    for (const e of entries ?? []) this.sentChars += e.token.length;
    return out;
  }
}
