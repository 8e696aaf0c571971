/**
 * The OpenAI wire format, both ways: request bodies of `/v1/completions` and
 * `/v1/chat/completions` to our generation options, and results to OpenAI's response and
 * stream-chunk objects. Pure functions; the HTTP side is in server.ts.
 */
import type { FinishReason, GenerateOptions, GenerateResult, JsonSchema } from "../backend.js";
import type { ChatMessage, ChatOptions, ChatResult } from "../chat.js";
import type { ToolCall } from "../tools.js";
import { InvalidOptionError } from "../errors.js";
import type { GeneratedTokenLogprob } from "../logprobs.js";
import { chatLogprobs, chatLogprobsParams, completionLogprobs, completionLogprobsParams } from "./logprobs.js";
import { SAMPLING_PARAMETER_NAMES, SAMPLING_PARAMETERS } from "../sampling.js";

/** A request the server rejects before any work, with the OpenAI parameter it is about. */
export class RequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly type = "invalid_request_error",
  ) {
    super(message);
  }
}

/** What both endpoints take from the body. */
export interface ParsedRequest {
  options: GenerateOptions;
  stream: boolean;
  includeUsage: boolean;
}

export interface ParsedCompletionRequest extends ParsedRequest {
  prompt: string | number[];
}

export interface ParsedChatRequest extends ParsedRequest {
  messages: ChatMessage[];
  options: ChatOptions;
}

/** OpenAI parameter names of our options, so an InvalidOptionError from a backend names the right one. */
const PARAM_OF_OPTION: Record<string, string> = {
  ...Object.fromEntries(SAMPLING_PARAMETER_NAMES.map((name) => [name, SAMPLING_PARAMETERS[name].openai])),
  ignoreEos: "ignore_eos",
  stop: "stop",
  jsonSchema: "response_format",
  prompt: "prompt",
  messages: "messages",
  tools: "tools",
  toolChoice: "tool_choice",
  parallelToolCalls: "parallel_tool_calls",
  toolCallFormat: "tool_call_format",
  logprobs: "logprobs",
  topLogprobs: "top_logprobs",
};

/** The OpenAI parameter an InvalidOptionError is about. */
export function paramOf(error: InvalidOptionError): string {
  const root = error.option.replace(/\[.*$/, "");
  return PARAM_OF_OPTION[root] ?? error.option;
}

// Parameters of OpenAI's API this server does not implement: accepted only at their no-op values,
// so a client never silently gets something other than what it asked for.
const UNSUPPORTED: Record<string, (v: unknown) => boolean> = {
  frequency_penalty: (v) => v === 0,
  presence_penalty: (v) => v === 0,
  logit_bias: (v) => typeof v === "object" && v !== null && Object.keys(v).length === 0,
  best_of: (v) => v === 1,
  echo: (v) => v === false,
  suffix: (v) => v === "",
  functions: (v) => Array.isArray(v) && v.length === 0,
};

/** Checks the parts of a request that both endpoints share and maps them to generation options. */
function parseCommon(body: Record<string, unknown>): ParsedRequest {
  for (const [name, isNoOp] of Object.entries(UNSUPPORTED)) {
    const value = body[name];
    if (value !== undefined && value !== null && !isNoOp(value)) {
      throw new RequestError(400, `"${name}" is not supported by this server`, name, "unsupported_parameter");
    }
  }
  if (body.model !== undefined && typeof body.model !== "string") throw new RequestError(400, `"model" must be a string`, "model");
  const n = body.n ?? 1;
  if (n !== 1) throw new RequestError(400, `"n" must be 1: this server generates one choice per request`, "n", "unsupported_parameter");

  const options: GenerateOptions = {};
  for (const name of SAMPLING_PARAMETER_NAMES) copy(body, SAMPLING_PARAMETERS[name].openai, options, name);
  // OpenAI's newer name for max_tokens wins.
  copy(body, "max_completion_tokens", options, "maxTokens");
  // OpenAI's defaults: temperature 1 and top_p 1 (the library itself defaults to greedy).
  options.temperature ??= 1;
  copy(body, "ignore_eos", options, "ignoreEos"); // llama.cpp server's extension, for benchmarks
  if (body.stop !== undefined && body.stop !== null) options.stop = body.stop as string | string[];
  const schema = responseFormatSchema(body.response_format);
  if (schema) options.jsonSchema = schema;

  const stream = body.stream ?? false;
  if (typeof stream !== "boolean") throw new RequestError(400, `"stream" must be a boolean`, "stream");
  const streamOptions = body.stream_options;
  if (streamOptions !== undefined && streamOptions !== null && (typeof streamOptions !== "object" || Array.isArray(streamOptions))) {
    throw new RequestError(400, `"stream_options" must be an object`, "stream_options");
  }
  const includeUsage = (streamOptions as { include_usage?: unknown } | null | undefined)?.include_usage ?? false;
  if (typeof includeUsage !== "boolean") throw new RequestError(400, `"stream_options.include_usage" must be a boolean`, "stream_options");
  return { options, stream, includeUsage };
}

function copy(body: Record<string, unknown>, from: string, to: ChatOptions, key: keyof ChatOptions): void {
  const value = body[from];
  if (value !== undefined && value !== null) (to as Record<string, unknown>)[key] = value;
}

/** `response_format`: text, or a JSON schema that the output is guaranteed to follow. */
function responseFormatSchema(format: unknown): JsonSchema | undefined {
  if (format === undefined || format === null) return undefined;
  const type = (format as { type?: unknown }).type;
  if (type === "text") return undefined;
  if (type === "json_schema") {
    const schema = (format as { json_schema?: { schema?: unknown } }).json_schema?.schema;
    if (typeof schema !== "object" || schema === null || Array.isArray(schema)) {
      throw new RequestError(400, `"response_format.json_schema.schema" must be a JSON schema object`, "response_format");
    }
    return schema as JsonSchema;
  }
  // JSON mode: any JSON object, enforced like a schema.
  if (type === "json_object") return { type: "object" };
  throw new RequestError(400, `"response_format.type" must be "text", "json_object" or "json_schema"`, "response_format");
}

/** `POST /v1/completions` body. */
export function parseCompletionRequest(body: Record<string, unknown>): ParsedCompletionRequest {
  for (const name of ["tools", "tool_choice"]) {
    if (body[name] !== undefined && body[name] !== null) throw new RequestError(400, `"${name}" is only supported by /v1/chat/completions`, name, "unsupported_parameter");
  }
  if (body.top_logprobs !== undefined && body.top_logprobs !== null) {
    throw new RequestError(400, `"top_logprobs" is a /v1/chat/completions parameter; here "logprobs": n asks for n alternatives`, "top_logprobs", "unsupported_parameter");
  }
  const common = parseCommon(body);
  Object.assign(common.options, completionLogprobsParams(body));
  let prompt = body.prompt;
  // A batch of one is a single prompt; larger batches would need n choices per response.
  if (Array.isArray(prompt) && prompt.length === 1 && (typeof prompt[0] === "string" || Array.isArray(prompt[0]))) prompt = prompt[0];
  const isIds = Array.isArray(prompt) && prompt.every((t) => Number.isInteger(t));
  if (typeof prompt !== "string" && !isIds) {
    throw new RequestError(400, `"prompt" must be a string or an array of token ids (one prompt per request)`, "prompt");
  }
  return { ...common, prompt: prompt as string | number[] };
}

/** `POST /v1/chat/completions` body. */
export function parseChatRequest(body: Record<string, unknown>): ParsedChatRequest {
  const common = parseCommon(body);
  const messages = body.messages;
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new RequestError(400, `"messages" must be a non-empty array`, "messages");
  }
  const options: ChatOptions = { ...common.options, ...chatLogprobsParams(body) };
  // Tools keep OpenAI's shape (lib/tools.ts checks them); the rest is renamed to camelCase.
  copy(body, "tools", options, "tools");
  copy(body, "tool_choice", options, "toolChoice");
  copy(body, "parallel_tool_calls", options, "parallelToolCalls");
  copy(body, "tool_call_format", options, "toolCallFormat"); // extension: override the detected call syntax
  return { ...common, options, messages: messages.map((m, i) => chatMessage(m, i)) };
}

/** One message; content parts of type text are joined, as a text-only model sees them. */
function chatMessage(message: unknown, index: number): ChatMessage {
  const param = `messages[${index}]`;
  if (typeof message !== "object" || message === null) throw new RequestError(400, `${param} must be an object`, param);
  const { role, content, tool_calls: calls, tool_call_id: callId, name } = message as { role?: unknown; content?: unknown; tool_calls?: unknown; tool_call_id?: unknown; name?: unknown };
  if (typeof role !== "string") throw new RequestError(400, `${param}.role must be a string`, `${param}.role`);
  const extra: Partial<ChatMessage> = {};
  if (calls !== undefined && calls !== null) {
    if (!Array.isArray(calls)) throw new RequestError(400, `${param}.tool_calls must be an array`, `${param}.tool_calls`);
    extra.toolCalls = calls as ToolCall[]; // same shape in both APIs; checked with the other messages
  }
  if (typeof callId === "string") extra.toolCallId = callId;
  if (typeof name === "string") extra.name = name;
  let text: string;
  if (typeof content === "string") text = content;
  else if (content === null || content === undefined) text = "";
  else if (Array.isArray(content)) {
    text = content
      .map((part: unknown, j) => {
        const p = part as { type?: unknown; text?: unknown };
        if (p?.type !== "text" || typeof p.text !== "string") {
          throw new RequestError(400, `${param}.content[${j}]: only parts of type "text" are supported (this is a text model)`, `${param}.content`);
        }
        return p.text;
      })
      .join("");
  } else throw new RequestError(400, `${param}.content must be a string or an array of text parts`, `${param}.content`);
  // "developer" is OpenAI's newer name for the system role; chat templates know "system".
  return { role: role === "developer" ? "system" : role, content: extra.toolCalls && (content === null || content === undefined) ? null : text, ...extra };
}

// ---------------------------------------------------------------------------------------------
// Responses

/** OpenAI's `finish_reason`; an aborted request has no response to carry one. */
export function finishReasonOf(reason: FinishReason): "stop" | "length" | "tool_calls" | null {
  return reason === "abort" ? null : reason === "toolCalls" ? "tool_calls" : reason;
}

/** OpenAI's `usage`; `cached_tokens` counts the prompt tokens the KV cache already held. */
export function usageOf(result: GenerateResult) {
  const u = result.usage;
  return {
    prompt_tokens: u.promptTokens,
    completion_tokens: u.completionTokens,
    total_tokens: u.totalTokens,
    prompt_tokens_details: { cached_tokens: u.promptTokens - u.evaluatedPromptTokens },
  };
}

/** Identity of one response: the same `id` and `created` on every chunk of a stream. */
export interface ResponseIdentity {
  id: string;
  created: number;
  model: string;
}

/** The fields every response object and stream chunk starts with. */
function envelope<T extends string>(who: ResponseIdentity, object: T) {
  return { id: who.id, object, created: who.created, model: who.model };
}

export function completionResponse(who: ResponseIdentity, result: GenerateResult) {
  return {
    ...envelope(who, "text_completion"),
    choices: [{ index: 0, text: result.text, logprobs: completionLogprobs(result.logprobs), finish_reason: finishReasonOf(result.finishReason) }],
    usage: usageOf(result),
  };
}

/** `logprobs`: the chunk's part of the legacy logprobs object (completionLogprobs), or null. */
export function completionChunk(who: ResponseIdentity, text: string, finish: FinishReason | null, logprobs: ReturnType<typeof completionLogprobs> = null) {
  return {
    ...envelope(who, "text_completion"),
    choices: [{ index: 0, text, logprobs, finish_reason: finish && finishReasonOf(finish) }],
  };
}

export function chatResponse(who: ResponseIdentity, result: ChatResult) {
  const { content, toolCalls } = result.message;
  const message = toolCalls ? { role: "assistant", content, tool_calls: toolCalls } : { role: "assistant", content };
  return {
    ...envelope(who, "chat.completion"),
    choices: [{ index: 0, message, logprobs: chatLogprobs(result.logprobs), finish_reason: finishReasonOf(result.finishReason) }],
    usage: usageOf(result),
  };
}

/** A stream delta: content, or tool calls (each with its index among the answer's calls). */
export interface ChatDelta {
  role?: "assistant";
  content?: string;
  tool_calls?: { index: number; id?: string; type?: "function"; function: { name?: string; arguments: string } }[];
}

/** `logprobs`: the entries of the tokens this chunk carries, when the request asked for them. */
export function chatChunk(who: ResponseIdentity, delta: ChatDelta, finish: FinishReason | null, logprobs?: readonly GeneratedTokenLogprob[]) {
  return {
    ...envelope(who, "chat.completion.chunk"),
    choices: [{ index: 0, delta, logprobs: chatLogprobs(logprobs), finish_reason: finish && finishReasonOf(finish) }],
  };
}

/** The last chunk of a stream with `stream_options.include_usage`: no choices, the usage. */
export function usageChunk(who: ResponseIdentity, object: "text_completion" | "chat.completion.chunk", result: GenerateResult) {
  return { ...envelope(who, object), choices: [], usage: usageOf(result) };
}
