/**
 * The server's tool calling and structured output with the official `openai` client and its Zod
 * helpers (`zodFunction`, `zodResponseFormat`), on both backends, with Qwen2.5's chat template
 * (hermes calls): forced calls parse and validate, streamed `delta.tool_calls` assemble into a
 * valid call, a full round trip (call, tool result, answer) works, and `/health` answers while a
 * schema compiles.
 */
import { readFileSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import OpenAI from "openai";
import { zodFunction, zodResponseFormat } from "openai/helpers/zod";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { GgufBackend } from "../lib/backends/gguf.js";
import { MlxBackend } from "../lib/backends/mlx.js";
import { createServer } from "../lib/server/server.js";
import { mlxAvailable } from "./support/mlx.js";

const models = join(import.meta.dirname, "..", "..", "shared", "models");
const QWEN = readFileSync(join(models, "chat-templates", "Qwen-Qwen2.5-7B-Instruct.jinja"), "utf8");
const targets = [
  { name: "gguf", enabled: true, make: () => new GgufBackend(), path: join(models, "stories260K", "stories260K.gguf"), load: { threads: 1 } },
  { name: "mlx", enabled: mlxAvailable, make: () => new MlxBackend(), path: join(models, "stories260K", "hf-f32"), load: {} },
];

const Weather = z.object({ city: z.string().max(16), unit: z.enum(["celsius", "fahrenheit"]) });
const weatherTool = zodFunction({ name: "get_weather", parameters: Weather, description: "Current weather in a city" });
const Story = z.object({ title: z.string().max(20), moral: z.string().max(30).nullable(), stars: z.number().int() });

for (const target of targets) {
  describe.skipIf(!target.enabled)(`server tools and structured output on ${target.name} (openai client)`, () => {
    const model = target.make();
    let server: Server;
    let client: OpenAI;
    let base = "";
    beforeAll(async () => {
      await model.load(target.path, target.load);
      server = createServer(model, { modelId: "stories", chatTemplate: QWEN });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "unused", maxRetries: 0 });
    });
    afterAll(async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await model.unload();
    });

    it("forced tool calls (zodFunction) parse and validate, then a full round trip answers", async () => {
      const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: "Weather in Paris?" }];
      for (const seed of [1, 2]) {
        const tool_choice = seed === 1 ? ("required" as const) : { type: "function" as const, function: { name: "get_weather" } };
        const r = await client.chat.completions.parse({ model: "stories", messages, tools: [weatherTool], tool_choice, temperature: 1, seed, max_tokens: 120 });
        const choice = r.choices[0]!;
        expect(choice.finish_reason).toBe("tool_calls");
        const call = choice.message.tool_calls![0]! as OpenAI.ChatCompletionMessageToolCall & { function: { parsed_arguments: unknown } };
        expect(call.type).toBe("function");
        expect(call.function.name).toBe("get_weather");
        expect(Weather.safeParse(JSON.parse(call.function.arguments)).success).toBe(true);
        expect(Weather.safeParse(call.function.parsed_arguments).success).toBe(true); // the client's own parse
      }
      const first = await client.chat.completions.create({ model: "stories", messages, tools: [weatherTool], tool_choice: "required", temperature: 0, max_tokens: 120 });
      const assistant = first.choices[0]!.message;
      const call = assistant.tool_calls![0]!;
      const followUp = await client.chat.completions.create({
        model: "stories",
        messages: [...messages, assistant, { role: "tool", tool_call_id: call.id, content: JSON.stringify({ temperature: 21 }) }],
        tools: [weatherTool],
        tool_choice: "none",
        temperature: 0,
        max_tokens: 8,
      });
      expect(followUp.choices[0]!.finish_reason).toMatch(/^(stop|length)$/);
      expect(typeof followUp.choices[0]!.message.content).toBe("string");
    });

    it("streams delta.tool_calls that assemble into a valid call", async () => {
      const stream = await client.chat.completions.create({
        model: "stories", messages: [{ role: "user", content: "Weather?" }], tools: [weatherTool], tool_choice: "required", temperature: 1, seed: 3, max_tokens: 120, stream: true,
      });
      const calls: { id?: string; name?: string; arguments: string }[] = [];
      let finish: string | null = null;
      let pieces = 0;
      for await (const chunk of stream) {
        const choice = chunk.choices[0];
        if (!choice) continue;
        finish = choice.finish_reason ?? finish;
        for (const d of choice.delta.tool_calls ?? []) {
          calls[d.index] ??= { arguments: "" };
          if (d.id) calls[d.index]!.id = d.id;
          if (d.function?.name) calls[d.index]!.name = d.function.name;
          calls[d.index]!.arguments += d.function?.arguments ?? "";
          pieces++;
        }
      }
      expect(finish).toBe("tool_calls");
      expect(calls).toHaveLength(1);
      expect(calls[0]!.name).toBe("get_weather");
      expect(calls[0]!.id).toMatch(/^[A-Za-z0-9]{9}$/);
      expect(Weather.safeParse(JSON.parse(calls[0]!.arguments)).success).toBe(true);
      expect(pieces).toBeGreaterThan(2); // arguments arrive in pieces, as they form
    });

    it("zodResponseFormat output parses with the client's parse()", async () => {
      for (const seed of [1, 2]) {
        const r = await client.chat.completions.parse({ model: "stories", messages: [{ role: "user", content: "A story" }], response_format: zodResponseFormat(Story, "story"), temperature: 1, seed, max_tokens: 120 });
        expect(Story.safeParse(r.choices[0]!.message.parsed).success).toBe(true);
      }
    });

    it("a schema past the size bound is a prompt 400 (#12: an enum of 50,000 took 47.7 s)", async () => {
      const started = performance.now();
      const huge = { type: "json_schema", json_schema: { name: "big", schema: { enum: Array.from({ length: 5000 }, (_, i) => i) } } };
      const res = await fetch(`${base}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: "x", response_format: huge }) });
      expect(res.status).toBe(400);
      expect((await res.json()).error).toMatchObject({ param: "response_format", message: expect.stringMatching(/more than 4096 enum\/const values/) });
      expect(performance.now() - started).toBeLessThan(1000);
    });

    it("/health answers while a large schema compiles off the event loop", async () => {
      // Many distinct patterns: each is a regex compiled to a DFA (uncached: new sources per run).
      const salt = `${Date.now() % 100_000}${target.name}`; // per backend, so neither finds the other's DFAs cached
      const properties = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`p${i}`, { type: "string", pattern: `^[a-z]{1,${20 + i}}-${salt}-[0-9]{2,${30 + i}}$` }]));
      const schema = { type: "object", properties, required: ["p0"] };
      const request = fetch(`${base}/v1/completions`, {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ prompt: "x", max_tokens: 400, temperature: 0, response_format: { type: "json_schema", json_schema: { name: "many", schema } } }),
      });
      await new Promise((r) => setTimeout(r, 20));
      const asked = performance.now();
      const health = await fetch(`${base}/health`);
      const healthMs = performance.now() - asked;
      expect(health.status).toBe(200);
      const done = await request;
      expect(done.status).toBe(200);
      console.log(`/health answered in ${healthMs.toFixed(0)} ms while the schema compiled`);
      expect(healthMs).toBeLessThan(250);
    });
  });
}
