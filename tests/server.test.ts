/**
 * The OpenAI-compatible server, over HTTP on loopback, on every backend available here: what it
 * answers equals what the library answers for the same request, streamed or not; a client that
 * disconnects aborts its generation; bad requests get OpenAI-style errors naming the parameter.
 */
import { spawn } from "node:child_process";
import { request as httpRequest, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GgufBackend } from "../lib/backends/gguf.js";
import { MlxBackend } from "../lib/backends/mlx.js";
import { InvalidOptionError } from "../lib/errors.js";
import { createServer, type RequestEndEvent, type ServerOptions } from "../lib/server/server.js";
import { mlxAvailable } from "./support/mlx.js";

const models = join(import.meta.dirname, "..", "..", "shared", "models");
const TEMPLATE = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";

const targets = [
  { name: "gguf", enabled: true, make: () => new GgufBackend(), path: join(models, "stories260K", "stories260K.gguf"), load: { threads: 1 } },
  { name: "mlx", enabled: mlxAvailable, make: () => new MlxBackend(), path: join(models, "stories260K", "hf-f32"), load: {} },
];

/** Parses a server-sent-events body into its `data:` payloads. */
function events(body: string): string[] {
  return body.split("\n\n").filter((e) => e.startsWith("data: ")).map((e) => e.slice(6));
}

for (const target of targets) {
  describe.skipIf(!target.enabled)(`OpenAI-compatible server on ${target.name}`, () => {
    const model = target.make();
    let server: Server;
    let base = "";
    const ended: RequestEndEvent[] = [];
    const post = (path: string, body: unknown) =>
      fetch(`${base}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: typeof body === "string" ? body : JSON.stringify(body) });

    beforeAll(async () => {
      await model.load(target.path, target.load);
      server = createServer(model, { modelId: "stories", chatTemplate: TEMPLATE, maxBodyBytes: 4096, onRequestEnd: (e) => ended.push(e) });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    afterAll(async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await model.unload();
    });

    it("lists its model and reports health", async () => {
      const list = await (await fetch(`${base}/v1/models`)).json();
      expect(list).toMatchObject({ object: "list", data: [{ id: "stories", object: "model", owned_by: "mlx-node" }] });
      expect(await (await fetch(`${base}/v1/models/stories`)).json()).toMatchObject({ id: "stories" });
      expect((await fetch(`${base}/v1/models/other`)).status).toBe(404);
      expect(await (await fetch(`${base}/health`)).json()).toEqual({ status: "ok", backend: target.name });
    });

    it("/v1/completions answers what generate() answers", async () => {
      const want = await model.generate("Once upon a time", { maxTokens: 24, temperature: 0 });
      const res = await post("/v1/completions", { model: "stories", prompt: "Once upon a time", max_tokens: 24, temperature: 0 });
      expect(res.status).toBe(200);
      const body = await res.json();
      expect(body.object).toBe("text_completion");
      expect(body.id).toMatch(/^cmpl-/);
      expect(body.choices).toEqual([{ index: 0, text: want.text, logprobs: null, finish_reason: "length" }]);
      expect(body.usage).toMatchObject({ prompt_tokens: want.usage.promptTokens, completion_tokens: 24, total_tokens: want.usage.promptTokens + 24 });
      expect(want.text.length).toBeGreaterThan(20);
    });

    it("streams completions as server-sent events that add up to the whole answer", async () => {
      const whole = await (await post("/v1/completions", { prompt: "Once upon a time", max_tokens: 24, temperature: 0 })).json();
      const res = await post("/v1/completions", { prompt: "Once upon a time", max_tokens: 24, temperature: 0, stream: true, stream_options: { include_usage: true } });
      expect(res.headers.get("content-type")).toBe("text/event-stream");
      const data = events(await res.text());
      expect(data.at(-1)).toBe("[DONE]");
      const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
      expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
      const text = chunks.flatMap((c) => c.choices).map((c: { text: string }) => c.text).join("");
      expect(text).toBe(whole.choices[0].text);
      expect(chunks.length).toBeGreaterThan(5); // really streamed, not one blob
      expect(chunks.at(-2).choices[0].finish_reason).toBe("length");
      expect(chunks.at(-1)).toMatchObject({ choices: [], usage: { completion_tokens: 24 } });
      // The same prompt again: its prefix came from the KV cache.
      expect(chunks.at(-1).usage.prompt_tokens_details.cached_tokens).toBeGreaterThan(0);
    });

    it("/v1/chat/completions renders the chat template and answers what chat() answers, whole and streamed", async () => {
      const messages = [{ role: "user", content: "Tell me a story." }];
      const want = await model.chat(messages, { chatTemplate: TEMPLATE, maxTokens: 16, temperature: 0 });
      const body = await (await post("/v1/chat/completions", { messages, max_tokens: 16, temperature: 0 })).json();
      expect(body.object).toBe("chat.completion");
      expect(body.choices[0].message).toEqual({ role: "assistant", content: want.text });
      expect(body.usage.prompt_tokens).toBe(want.usage.promptTokens);

      // Content parts and the "developer" role, as newer OpenAI clients send them.
      const parts = [{ role: "developer", content: [{ type: "text", text: "Be brief." }] }, ...messages];
      const wantParts = await model.chat([{ role: "system", content: "Be brief." }, ...messages], { chatTemplate: TEMPLATE, maxTokens: 16, temperature: 0 });
      const res = await post("/v1/chat/completions", { messages: parts, max_tokens: 16, temperature: 0, stream: true });
      const data = events(await res.text());
      expect(data.at(-1)).toBe("[DONE]");
      const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
      expect(chunks[0].choices[0].delta).toEqual({ role: "assistant", content: "" });
      expect(chunks.map((c) => c.choices[0].delta.content ?? "").join("")).toBe(wantParts.text);
      expect(chunks.at(-1).choices[0]).toMatchObject({ delta: {}, finish_reason: "length" });
    });

    it("response_format json_schema gives JSON that validates, from a story model at temperature 1", async () => {
      const schema = { type: "object", properties: { name: { type: "string" }, age: { type: "integer" } }, required: ["name", "age"] };
      for (const seed of [1, 2, 3]) {
        const body = await (
          await post("/v1/chat/completions", {
            messages: [{ role: "user", content: "Who is Lily?" }],
            max_tokens: 40,
            temperature: 1,
            seed,
            response_format: { type: "json_schema", json_schema: { name: "person", schema } },
          })
        ).json();
        const value = JSON.parse(body.choices[0].message.content);
        expect(Object.keys(value)).toEqual(["name", "age"]);
        expect(typeof value.name).toBe("string");
        expect(Number.isInteger(value.age)).toBe(true);
      }
    });

    it("response_format json_object gives a JSON object", async () => {
      const body = await (await post("/v1/chat/completions", { messages: [{ role: "user", content: "Hi" }], max_tokens: 30, temperature: 1, seed: 4, response_format: { type: "json_object" } })).json();
      const value = JSON.parse(body.choices[0].message.content);
      expect(typeof value === "object" && value !== null && !Array.isArray(value)).toBe(true);
    });

    it("a client that disconnects mid-stream aborts its generation, and the next request runs", async () => {
      const controller = new AbortController();
      const res = await fetch(`${base}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 1500, ignore_eos: true, temperature: 0, stream: true }),
        signal: controller.signal,
      });
      const reader = res.body!.getReader();
      await reader.read();
      controller.abort();
      const event = await waitFor(() => ended.find((e) => e.finishReason === "abort"));
      expect(event.status).toBe(499);
      expect(event.completionTokens).toBeLessThan(1500);
      const next = await post("/v1/completions", { prompt: "Once upon a time", max_tokens: 4, temperature: 0 });
      expect((await next.json()).usage.completion_tokens).toBe(4);
    });

    it("works with the official OpenAI client: completions, streamed chat, json_schema and errors", async () => {
      const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "unused", maxRetries: 0 });
      expect((await client.models.list()).data.map((m) => m.id)).toEqual(["stories"]);
      const want = await model.generate("Once upon a time", { maxTokens: 12, temperature: 0 });
      const completion = await client.completions.create({ model: "stories", prompt: "Once upon a time", max_tokens: 12, temperature: 0 });
      expect(completion.choices[0]!.text).toBe(want.text);
      expect(completion.usage?.completion_tokens).toBe(12);

      const messages = [{ role: "user" as const, content: "Tell me a story." }];
      const chat = await model.chat(messages, { chatTemplate: TEMPLATE, maxTokens: 12, temperature: 0 });
      const stream = await client.chat.completions.create({ model: "stories", messages, max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true } });
      let content = "";
      let usage: OpenAI.CompletionUsage | null | undefined;
      for await (const chunk of stream) {
        content += chunk.choices[0]?.delta.content ?? "";
        usage ??= chunk.usage;
      }
      expect(content).toBe(chat.text);
      expect(usage?.completion_tokens).toBe(12);

      const json = await client.chat.completions.create({
        model: "stories",
        messages,
        max_tokens: 30,
        seed: 7,
        response_format: { type: "json_schema", json_schema: { name: "answer", schema: { type: "object", properties: { ok: { type: "boolean" } }, required: ["ok"] } } },
      });
      expect(typeof JSON.parse(json.choices[0]!.message.content!).ok).toBe("boolean");

      const error = await client.completions.create({ model: "stories", prompt: "x", temperature: 9 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(OpenAI.BadRequestError);
      expect((error as InstanceType<typeof OpenAI.BadRequestError>).param).toBe("temperature");
    });

    it("rejects bad requests with OpenAI-style errors naming the parameter", async () => {
      const cases: [unknown, number, string | null][] = [
        [{ prompt: "x", temperature: 7 }, 400, "temperature"],
        [{ prompt: "x", max_tokens: -1 }, 400, "max_tokens"],
        [{ prompt: "x", n: 2 }, 400, "n"],
        [{ prompt: "x", logprobs: 21 }, 400, "logprobs"],
        [{ prompt: "x", stream: "yes" }, 400, "stream"],
        [{ prompt: 42 }, 400, "prompt"],
        [{ prompt: "x", response_format: { type: "json_schema", json_schema: { schema: { type: "string", format: "credit-card" } } } }, 400, "response_format"],
        ["{not json", 400, null],
        [{ prompt: "x".repeat(5000) }, 413, null],
      ];
      for (const [body, status, param] of cases) {
        const res = await post("/v1/completions", body);
        expect(res.status, JSON.stringify(body).slice(0, 80)).toBe(status);
        const { error } = await res.json();
        expect(error.param).toBe(param);
        expect(error.message.length).toBeGreaterThan(10);
      }
      const chat = await post("/v1/chat/completions", { messages: [] });
      expect([chat.status, (await chat.json()).error.param]).toEqual([400, "messages"]);
      expect((await fetch(`${base}/v1/completions`)).status).toBe(405);
      expect((await post("/v1/embeddings", {})).status).toBe(404);
      // Still serving after all of that.
      expect((await post("/v1/completions", { prompt: "Once", max_tokens: 2 })).status).toBe(200);
    });
  });
}

describe("server CORS", () => {
  it("answers preflights and allows the configured origin only when asked to", async () => {
    const model = new GgufBackend();
    await model.load(join(models, "stories260K", "stories260K.gguf"), { threads: 1 });
    const servers = [createServer(model), createServer(model, { corsOrigin: "http://localhost:5173" })];
    try {
      const [closed, open] = await Promise.all(
        servers.map(async (s) => {
          await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
          return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
        }),
      );
      expect((await fetch(`${closed}/v1/completions`, { method: "OPTIONS" })).status).toBe(405);
      expect((await fetch(`${closed}/v1/models`)).headers.get("access-control-allow-origin")).toBeNull();
      const preflight = await fetch(`${open}/v1/chat/completions`, { method: "OPTIONS" });
      expect(preflight.status).toBe(204);
      expect(preflight.headers.get("access-control-allow-origin")).toBe("http://localhost:5173");
      expect(preflight.headers.get("access-control-allow-headers")).toContain("content-type");
      const res = await fetch(`${open}/v1/completions`, { method: "POST", body: JSON.stringify({ prompt: "Once", max_tokens: 2 }) });
      expect(res.status).toBe(200);
      expect(res.headers.get("access-control-allow-origin")).toBe("http://localhost:5173");
    } finally {
      for (const s of servers) {
        s.closeAllConnections();
        await new Promise((r) => s.close(r));
      }
      await model.unload();
    }
  });
});

/** One request with exactly these headers (fetch would set Host and Origin itself). */
function rawRequest(base: string, method: string, path: string, headers: Record<string, string>, body?: string) {
  return new Promise<{ status: number; headers: IncomingHttpHeaders; body: string }>((resolve, reject) => {
    const req = httpRequest(`${base}${path}`, { method, headers }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (text += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

describe("server access: Origin and Host (browsers, DNS rebinding) and malformed URLs", () => {
  const model = new GgufBackend();
  const started: Server[] = [];
  const ended: RequestEndEvent[] = [];
  const start = async (options: ServerOptions) => {
    const server = createServer(model, { ...options, onRequestEnd: (e) => ended.push(e) });
    started.push(server);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    return { base: `http://127.0.0.1:${port}`, port };
  };
  const completion = JSON.stringify({ prompt: "Once upon a time", max_tokens: 2 });
  const generations = () => ended.filter((e) => e.finishReason !== undefined).length;
  beforeAll(async () => {
    await model.load(join(models, "stories260K", "stories260K.gguf"), { threads: 1 });
  });
  afterAll(async () => {
    for (const s of started) {
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
    await model.unload();
  });

  it("without corsOrigin, refuses a cross-origin simple request (text/plain POST, GET) with 403 before any generation", async () => {
    const { base, port } = await start({});
    const before = generations();
    for (const origin of ["https://evil.example", "null", `http://localhost:${port + 1}`]) {
      const res = await rawRequest(base, "POST", "/v1/completions", { origin, "content-type": "text/plain" }, completion);
      expect(res.status, origin).toBe(403);
      expect(JSON.parse(res.body).error, origin).toMatchObject({ type: "invalid_request_error", param: null, code: "origin_not_allowed" });
      expect(res.headers["access-control-allow-origin"]).toBeUndefined();
    }
    expect((await rawRequest(base, "GET", "/v1/models", { origin: "https://evil.example" })).status).toBe(403);
    expect(generations()).toBe(before);
    // Clients without an Origin (curl, SDKs) and same-origin requests are served.
    expect((await rawRequest(base, "POST", "/v1/completions", { "content-type": "text/plain" }, completion)).status).toBe(200);
    expect((await rawRequest(base, "POST", "/v1/completions", { origin: base }, completion)).status).toBe(200);
    expect(generations()).toBe(before + 2);
  });

  it("with corsOrigin, serves that origin only; preflights from others are refused too", async () => {
    const { base } = await start({ corsOrigin: "http://localhost:5173" });
    const allowed = await rawRequest(base, "POST", "/v1/completions", { origin: "http://localhost:5173", "content-type": "text/plain" }, completion);
    expect(allowed.status).toBe(200);
    expect(allowed.headers["access-control-allow-origin"]).toBe("http://localhost:5173");
    expect((await rawRequest(base, "POST", "/v1/completions", { origin: "http://localhost:5174" }, completion)).status).toBe(403);
    const preflight = { origin: "https://evil.example", "access-control-request-method": "POST" };
    expect((await rawRequest(base, "OPTIONS", "/v1/completions", preflight)).status).toBe(403);
    const any = await start({ corsOrigin: "*" });
    expect((await rawRequest(any.base, "POST", "/v1/completions", { origin: "https://anywhere.example" }, completion)).status).toBe(200);
    expect(() => createServer(model, { corsOrigin: "localhost:5173" })).toThrow(InvalidOptionError);
  });

  it("accepts only IP addresses and localhost names as Host by default (DNS rebinding), and names allowed with allowedHosts", async () => {
    const { base, port } = await start({});
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`, "127.0.0.1", `app.localhost:${port}`, `192.168.1.20:${port}`]) {
      expect((await rawRequest(base, "GET", "/v1/models", { host })).status, host).toBe(200);
    }
    // A rebound name: the attacker's page is same-origin with itself, so its Origin matches its Host.
    const rebound = await rawRequest(base, "POST", "/v1/completions", { host: `evil.example:${port}`, origin: `http://evil.example:${port}` }, completion);
    expect(rebound.status).toBe(403);
    expect(JSON.parse(rebound.body).error).toMatchObject({ type: "invalid_request_error", code: "host_not_allowed" });
    for (const host of [`evil.example:${port}`, `localhost.evil.example:${port}`, `evil.example@127.0.0.1:${port}`]) {
      expect((await rawRequest(base, "GET", "/health", { host })).status, host).toBe(403);
    }
    const named = await start({ allowedHosts: ["mybox.lan", ".corp.example"] });
    for (const [host, status] of [["mybox.lan", 200], [`MyBox.lan:${named.port}`, 200], ["gpu.corp.example", 200], ["corp.example", 200], ["other.lan", 403], ["xcorp.example", 403]] as const) {
      expect((await rawRequest(named.base, "GET", "/v1/models", { host })).status, host).toBe(status);
    }
    const anyHost = await start({ allowedHosts: ["*"] });
    expect((await rawRequest(anyHost.base, "GET", "/v1/models", { host: "whatever.example" })).status).toBe(200);
    expect(() => createServer(model, { allowedHosts: ["bad host"] })).toThrow(InvalidOptionError);
  });

  it("answers a malformed percent-encoded URL with 400, not 500", async () => {
    const { base } = await start({ modelId: "stories" });
    const res = await rawRequest(base, "GET", "/v1/models/%E0%A4%A", {});
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body).error).toMatchObject({ type: "invalid_request_error", code: "invalid_url" });
    expect((await rawRequest(base, "GET", "/v1/models/st%6Fries", {})).status).toBe(200);
  });
});

describe("server queue limit", () => {
  it("answers 503 server_busy when the model's queue is full, and serves again once it drains", async () => {
    const model = new GgufBackend({ maxQueuedRequests: 0 });
    await model.load(join(models, "stories260K", "stories260K.gguf"), { threads: 1, maxBatch: 1 });
    const server = createServer(model);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const post = (body: unknown) => fetch(`${base}/v1/completions`, { method: "POST", body: JSON.stringify(body) });
    try {
      const long = await post({ prompt: "Once upon a time", max_tokens: 1000, ignore_eos: true, temperature: 0, stream: true });
      const reader = long.body!.getReader();
      await reader.read(); // generating now
      const busy = await post({ prompt: "Once", max_tokens: 2 });
      expect(busy.status).toBe(503);
      expect((await busy.json()).error).toMatchObject({ type: "server_error", code: "server_busy" });
      while (!(await reader.read()).done) {
        // Drain the long request.
      }
      expect((await post({ prompt: "Once", max_tokens: 2 })).status).toBe(200);
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await model.unload();
    }
  });
});

describe("mlx-node serve", () => {
  it("serves until SIGTERM, then exits 0", async () => {
    const cli = join(import.meta.dirname, "..", "dist", "lib", "cli", "main.js");
    const child = spawn(process.execPath, [cli, "serve", "-m", join(models, "stories260K", "stories260K.gguf"), "--port", "0", "--threads", "1", "--allow-host", "mybox.lan"], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const url = await waitFor(() => stderr.match(/at (http:\/\/127\.0\.0\.1:\d+\/v1)/)?.[1], 30_000);
    const res = await fetch(`${url}/completions`, { method: "POST", body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 8, temperature: 0 }) });
    expect((await res.json()).choices[0].text).toMatch(/^, there was/);
    const base = url.replace(/\/v1$/, "");
    expect((await rawRequest(base, "GET", "/v1/models", { host: "mybox.lan:8080" })).status).toBe(200);
    expect((await rawRequest(base, "GET", "/v1/models", { host: "other.lan:8080" })).status).toBe(403);
    expect((await rawRequest(base, "POST", "/v1/completions", { origin: "https://evil.example" }, "{}")).status).toBe(403);
    const code = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    expect(await code).toBe(0);
    expect(stderr).toMatch(/POST \/v1\/completions 200 finish=length tokens=8/);
    expect(stderr).toContain("server stopped");
  });

  it.skipIf(!mlxAvailable)("serve --parallel N batches an MLX model's concurrent requests, each answered as alone", async () => {
    const cli = join(import.meta.dirname, "..", "dist", "lib", "cli", "main.js");
    // No queue: a request beyond the ones running at once would be refused (busy).
    const child = spawn(process.execPath, [cli, "serve", "-m", join(models, "stories260K", "hf-f32"), "--port", "0", "--parallel", "3", "--max-queued", "0"], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    try {
      const url = await waitFor(() => stderr.match(/at (http:\/\/127\.0\.0\.1:\d+\/v1)/)?.[1], 30_000);
      const complete = async (prompt: string) => {
        const res = await fetch(`${url}/completions`, { method: "POST", body: JSON.stringify({ prompt, max_tokens: 24, temperature: 0 }) });
        expect(res.status).toBe(200);
        return (await res.json()).choices[0].text as string;
      };
      const prompts = ["Once upon a time", "Tom and his dog", "The sun was"];
      const alone = [];
      for (const p of prompts) alone.push(await complete(p));
      expect(await Promise.all(prompts.map(complete))).toEqual(alone);
    } finally {
      const code = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await code;
    }
  });
});

async function waitFor<T>(probe: () => T | undefined, ms = 10_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > until) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 10));
  }
}
