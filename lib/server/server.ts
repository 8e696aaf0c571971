/**
 * An OpenAI-compatible HTTP server over one loaded model: `/v1/completions`,
 * `/v1/chat/completions` (whole or streamed as server-sent events), `/v1/models`, `/health`.
 * Any OpenAI client pointed at it works. A client that disconnects aborts its generation, so its
 * place in the model's queue goes to the next request at once.
 */
import { randomUUID } from "node:crypto";
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { FinishReason, GenerateResult, GenerationStream, InferenceBackend } from "../backend.js";
import type { ChatChunk, ChatOptions, ChatResult } from "../chat.js";
import type { ToolStreamDelta } from "../tools.js";
import { InvalidOptionError, MlxNodeError, type MlxNodeErrorCode } from "../errors.js";
import { accessPolicy, checkAccess } from "./access.js";
import { PendingLogprobs } from "./logprobs.js";
import { prepareJsonSchema } from "../json-schema/compile-async.js";
import {
  chatChunk, chatResponse, completionChunk, completionResponse, paramOf, parseChatRequest, parseCompletionRequest,
  RequestError, usageChunk, type ChatDelta, type ResponseIdentity,
} from "./openai.js";

/** Options of {@link createServer}. */
export interface ServerOptions {
  /** The model name reported by `/v1/models` and in responses. Defaults to `"local-model"`. */
  modelId?: string;
  /** A Jinja chat template for models that have none (or to override theirs). Defaults to the model's own. */
  chatTemplate?: string;
  /**
   * Lets web pages from this origin (`"*"`: any) call the server, answering CORS preflights.
   * Defaults to none: a request that carries another origin (browsers send `Origin` on every
   * cross-origin request, also on "simple" ones without a preflight) is refused with 403, so a
   * page you visit cannot use your local model behind your back.
   */
  corsOrigin?: string;
  /**
   * Host names (the `Host` header) accepted besides IP addresses, `localhost` and `*.localhost`,
   * e.g. the name of this machine when serving a network: `"mybox.lan"`, `".lan"` for it and
   * its subdomains, `"*"` for any. Other names get 403, which stops DNS-rebinding attacks (a page
   * whose own name was pointed at this machine). Defaults to none.
   */
  allowedHosts?: string[];
  /** Largest request body accepted, in bytes. Defaults to 8 MiB. */
  maxBodyBytes?: number;
  /** Called when a generation request ends (also when the client went away: `finishReason: "abort"`). */
  onRequestEnd?: (event: RequestEndEvent) => void;
}

/** One finished request, for access logs and tests. */
export interface RequestEndEvent {
  method: string;
  path: string;
  status: number;
  stream: boolean;
  finishReason?: FinishReason;
  completionTokens?: number;
  error?: string;
  ms: number;
}

const DEFAULT_MAX_BODY = 8 * 2 ** 20;

/**
 * Creates (does not start) an HTTP server that answers OpenAI API requests with `model`.
 *
 * @example
 * ```ts
 * import { createServer, loadModel } from "mlx-node";
 * const model = await loadModel("model.gguf");
 * createServer(model, { modelId: "my-model" }).listen(8080, "127.0.0.1");
 * // then: new OpenAI({ baseURL: "http://127.0.0.1:8080/v1", apiKey: "unused" })
 * ```
 */
/** A streamed piece in OpenAI's delta shape. */
function wireDelta(delta: ToolStreamDelta): ChatDelta {
  if ("content" in delta) return { content: delta.content };
  if (!delta.id) return { tool_calls: [{ index: delta.index, function: { arguments: delta.arguments } }] };
  return { tool_calls: [{ index: delta.index, id: delta.id, type: "function", function: { name: delta.name, arguments: delta.arguments } }] };
}

export function createServer(model: InferenceBackend, options: ServerOptions = {}): Server {
  const modelId = options.modelId ?? "local-model";
  const maxBody = options.maxBodyBytes ?? DEFAULT_MAX_BODY;
  const created = Math.floor(Date.now() / 1000);
  const access = accessPolicy(options.corsOrigin, options.allowedHosts);
  return createHttpServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      // Only reached when writing itself failed (the socket is gone): nothing left to tell.
      res.destroy(error instanceof Error ? error : undefined);
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const start = performance.now();
    const path = (req.url ?? "/").split("?")[0]!;
    const end = (event: Omit<RequestEndEvent, "method" | "path" | "ms">) =>
      options.onRequestEnd?.({ method: req.method ?? "", path, ms: performance.now() - start, ...event });
    try {
      // Before anything else, also before preflights: a refused page learns nothing and runs nothing.
      checkAccess(access, req.headers.host, req.headers.origin);
      const cors = access.corsOrigin;
      if (cors) {
        res.setHeader("access-control-allow-origin", cors);
        if (cors !== "*") res.setHeader("vary", "origin");
        if (req.method === "OPTIONS") {
          res.writeHead(204, {
            "access-control-allow-methods": "GET, POST, OPTIONS",
            "access-control-allow-headers": "authorization, content-type",
            "access-control-max-age": "600",
          });
          return void res.end();
        }
      }
      if (path === "/health" || path === "/v1/models" || path.startsWith("/v1/models/")) {
        allow(req, "GET");
        if (path === "/health") return sendJson(res, 200, { status: model.isLoaded ? "ok" : "unloaded", backend: model.name });
        const cards = [modelId, ...model.adapterNames.map((a) => `${modelId}:${a}`)].map((id) => ({ id, object: "model", created, owned_by: "mlx-node" }));
        if (path === "/v1/models") return sendJson(res, 200, { object: "list", data: cards });
        const card = cards.find((c) => c.id === decodePathPart(path.slice("/v1/models/".length)));
        if (!card) throw new RequestError(404, `The model "${path.slice(11)}" does not exist: this server runs "${modelId}"`, "model", "model_not_found");
        return sendJson(res, 200, card);
      }
      const kind = path === "/v1/completions" ? "completion" : path === "/v1/chat/completions" ? "chat" : undefined;
      if (!kind) throw new RequestError(404, `Unknown endpoint ${req.method} ${path}`, null, "not_found");
      allow(req, "POST");
      const body = await readJson(req, maxBody);
      const adapter = requestedAdapter(body.model, modelId, model.adapterNames);
      const who: ResponseIdentity = {
        id: `${kind === "chat" ? "chatcmpl" : "cmpl"}-${randomUUID()}`, created: Math.floor(Date.now() / 1000),
        model: adapter ? `${modelId}:${adapter}` : modelId,
      };

      // A client that goes away (closes the socket before the response ends) aborts the work.
      const controller = new AbortController();
      res.on("close", () => {
        if (!res.writableFinished) controller.abort();
      });
      let stream: GenerationStream;
      let streaming: boolean;
      let includeUsage: boolean;
      if (kind === "completion") {
        const parsed = parseCompletionRequest(body);
        ({ stream: streaming, includeUsage } = parsed);
        await prepareJsonSchema(parsed.options.jsonSchema);
        stream = model.generateStream(parsed.prompt, { ...parsed.options, signal: controller.signal, ...(adapter ? { adapter } : {}) });
      } else {
        const parsed = parseChatRequest(body);
        ({ stream: streaming, includeUsage } = parsed);
        await prepareJsonSchema(parsed.options.jsonSchema);
        const chatOptions: ChatOptions = { ...parsed.options, signal: controller.signal, ...(adapter ? { adapter } : {}) };
        if (options.chatTemplate !== undefined) chatOptions.chatTemplate = options.chatTemplate;
        stream = model.chatStream(parsed.messages, chatOptions);
      }
      const object = kind === "chat" ? "chat.completion.chunk" : "text_completion";

      if (!streaming) {
        const result = await settle(stream);
        if (result.finishReason !== "abort") sendJson(res, 200, kind === "chat" ? chatResponse(who, result as ChatResult) : completionResponse(who, result));
        // 499: nginx's "client closed the request", for logs; nothing is sent to a gone client.
        return end({ status: result.finishReason === "abort" ? 499 : 200, stream: false, finishReason: result.finishReason, completionTokens: result.usage.completionTokens });
      }

      // Server-sent events. Nothing is written until the first chunk (or an error) is known, so an
      // error before generation starts still gets a proper status code.
      const iterator = stream[Symbol.asyncIterator]();
      const first = await iterator.next();
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
      const send = (data: unknown) => res.write(`data: ${JSON.stringify(data)}\n\n`);
      if (kind === "chat") send(chatChunk(who, { role: "assistant", content: "" }, null));
      // With logprobs, the entries of tokens whose text is not out yet (part of a character, a
      // possible stop string) go with the next chunk that has text, or with the last one.
      const logprobs = new PendingLogprobs();
      try {
        for (let step = first; !step.done; step = await iterator.next()) {
          const chunk: ChatChunk = step.value;
          logprobs.add(chunk.logprobs);
          if (!chunk.text) continue;
          if (kind !== "chat") send(completionChunk(who, chunk.text, null, logprobs.takeCompletion()));
          else if (!chunk.deltas) send(chatChunk(who, { content: chunk.text }, null, logprobs.take()));
          else for (const delta of chunk.deltas) send(chatChunk(who, wireDelta(delta), null, logprobs.take()));
        }
        const result = await stream.result;
        if (result.finishReason !== "abort") {
          send(kind === "chat" ? chatChunk(who, {}, result.finishReason, logprobs.take()) : completionChunk(who, "", result.finishReason, logprobs.takeCompletion()));
          if (includeUsage) send(usageChunk(who, object, result));
          res.end("data: [DONE]\n\n");
        }
        end({ status: result.finishReason === "abort" ? 499 : 200, stream: true, finishReason: result.finishReason, completionTokens: result.usage.completionTokens });
      } catch (error) {
        // Headers are sent: report the failure in the stream, as OpenAI does, then close it.
        const { payload } = errorPayload(error);
        if (!res.writableEnded && !res.destroyed) res.end(`data: ${JSON.stringify(payload)}\n\n`);
        end({ status: 200, stream: true, error: payload.error.message });
      }
    } catch (error) {
      const { status, payload } = errorPayload(error);
      if (!res.headersSent && !res.destroyed) sendJson(res, status, payload);
      end({ status, stream: false, error: payload.error.message });
    }
  }
}

/** Runs a stream to its end and returns the result. */
async function settle(stream: GenerationStream): Promise<GenerateResult> {
  for await (const _ of stream) {
    // Accumulated into the result by the stream itself.
  }
  return stream.result;
}

/** A percent-encoded path segment, decoded; a malformed one (`%E0%A4%A`) is the client's error. */
function decodePathPart(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new RequestError(400, `The URL path is not validly percent-encoded: ${JSON.stringify(part)}`, null, "invalid_url");
  }
}

function allow(req: IncomingMessage, method: string): void {
  if (req.method !== method) throw new RequestError(405, `${req.url} takes ${method}, not ${req.method}`, null, "method_not_allowed");
}

/**
 * The adapter a request's `model` names: "<model id>:<adapter>" runs with a loaded adapter
 * (`loadAdapter`, `serve --adapter name=dir`); the model id alone (or no `model`) runs the base.
 */
function requestedAdapter(requested: unknown, modelId: string, loaded: readonly string[]): string | undefined {
  if (typeof requested !== "string" || requested === modelId || !requested.includes(":")) return undefined;
  const adapter = requested.slice(requested.lastIndexOf(":") + 1);
  if (!loaded.includes(adapter)) {
    const known = loaded.length > 0 ? loaded.map((a) => `"${modelId}:${a}"`).join(", ") : "none";
    throw new RequestError(404, `The model "${requested}" does not exist: this server runs "${modelId}" with the adapters ${known}`, "model", "model_not_found");
  }
  return adapter;
}

async function readJson(req: IncomingMessage, limit: number): Promise<Record<string, unknown>> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const part of req as AsyncIterable<Buffer>) {
    size += part.length;
    if (size > limit) throw new RequestError(413, `The request body is larger than ${limit} bytes`, null, "body_too_large");
    parts.push(part);
  }
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(parts).toString("utf8"));
  } catch (error) {
    throw new RequestError(400, `The request body is not valid JSON: ${(error as Error).message}`, null, "invalid_json");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw new RequestError(400, "The request body must be a JSON object", null, "invalid_json");
  return body as Record<string, unknown>;
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const text = JSON.stringify(value);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

/**
 * How each error code is answered: HTTP status, OpenAI error type and code, and the parameter it
 * is about. One entry per code of lib/errors.ts (the type makes a new code need one here).
 */
const HTTP_ERRORS: { [C in MlxNodeErrorCode]: { status: number; type: "invalid_request_error" | "server_error"; code: string; param?: string } } = {
  INVALID_OPTION: { status: 400, type: "invalid_request_error", code: "invalid_value" },
  CHAT_TEMPLATE_ERROR: { status: 400, type: "invalid_request_error", code: "chat_template_error", param: "messages" },
  BUSY: { status: 503, type: "server_error", code: "server_busy" },
  UNLOADED: { status: 503, type: "server_error", code: "model_unloaded" },
  NOT_LOADED: { status: 503, type: "server_error", code: "model_unloaded" },
  MODEL_NOT_FOUND: { status: 500, type: "server_error", code: "model_not_found" },
  BAD_WEIGHTS: { status: 500, type: "server_error", code: "bad_weights" },
  BAD_CONFIG: { status: 500, type: "server_error", code: "bad_config" },
  BAD_ADAPTER: { status: 500, type: "server_error", code: "bad_adapter" },
  UNSUPPORTED_ARCHITECTURE: { status: 500, type: "server_error", code: "unsupported_architecture" },
  BACKEND_UNAVAILABLE: { status: 500, type: "server_error", code: "backend_unavailable" },
  ALREADY_LOADED: { status: 500, type: "server_error", code: "already_loaded" },
  TOKENIZER_ERROR: { status: 500, type: "server_error", code: "tokenizer_error" },
  MLX_ERROR: { status: 500, type: "server_error", code: "mlx_error" },
  GGUF_ERROR: { status: 500, type: "server_error", code: "gguf_error" },
  HUB_ACCESS_DENIED: { status: 500, type: "server_error", code: "hub_access_denied" },
  DOWNLOAD_FAILED: { status: 500, type: "server_error", code: "download_failed" },
};

/** An error as OpenAI's `{ error: { message, type, param, code } }` with its HTTP status. */
export function errorPayload(error: unknown): { status: number; payload: { error: { message: string; type: string; param: string | null; code: string | null } } } {
  const make = (status: number, message: string, type: string, param: string | null, code: string | null) => ({
    status,
    payload: { error: { message, type, param, code } },
  });
  if (error instanceof RequestError) return make(error.status, error.message, error.type, error.param, error.code);
  if (error instanceof MlxNodeError) {
    const answer = HTTP_ERRORS[error.code] ?? HTTP_ERRORS.MLX_ERROR;
    const param = error instanceof InvalidOptionError ? paramOf(error) : answer.param ?? null;
    return make(answer.status, error.message, answer.type, param, answer.code);
  }
  return make(500, error instanceof Error ? error.message : String(error), "server_error", null, null);
}
