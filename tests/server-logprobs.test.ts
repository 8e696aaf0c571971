/**
 * `logprobs` / `top_logprobs` through the OpenAI-compatible server, read with the official `openai`
 * client on both endpoints, whole and streamed, on every backend available here: the wire shapes
 * (chat `choices[].logprobs.content[]`, legacy `tokens`/`token_logprobs`/`top_logprobs`/`text_offset`),
 * agreement with what the library reports for the same request, and 400s naming the parameter.
 */
import { readFileSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GgufBackend } from "../lib/backends/gguf.js";
import { MlxBackend } from "../lib/backends/mlx.js";
import { createServer } from "../lib/server/server.js";
import { mlxAvailable } from "./support/mlx.js";

const models = join(import.meta.dirname, "..", "..", "shared", "models");
// Qwen2.5's template (hermes tool calls), so that tool-call streams can be checked too.
const TEMPLATE = readFileSync(join(models, "chat-templates", "Qwen-Qwen2.5-7B-Instruct.jinja"), "utf8");
const weatherTool = {
  type: "function" as const,
  function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string", maxLength: 12 } }, required: ["city"] } },
};
const MESSAGES = [{ role: "user" as const, content: "Tell me a story about a cat." }];

const targets = [
  { name: "gguf", enabled: true, make: () => new GgufBackend(), path: join(models, "stories260K", "stories260K.gguf") },
  { name: "mlx", enabled: mlxAvailable, make: () => new MlxBackend(), path: join(models, "stories260K", "hf-f32") },
];

/**
 * Equal, numbers within 1e-4: a repeated prompt reuses the KV cache on GGUF, where its last token is
 * then evaluated alone rather than in the prompt's batch, which moves logprobs by about 1e-5.
 */
function expectClose(got: unknown, want: unknown, path = "$"): void {
  if (typeof want === "number" && typeof got === "number") {
    expect(Math.abs(got - want), path).toBeLessThanOrEqual(1e-4);
  } else if (want !== null && typeof want === "object" && got !== null && typeof got === "object") {
    expect(Object.keys(got).sort(), path).toEqual(Object.keys(want).sort());
    for (const key of Object.keys(want)) expectClose((got as Record<string, unknown>)[key], (want as Record<string, unknown>)[key], `${path}.${key}`);
  } else expect(got, path).toEqual(want);
}

for (const target of targets) {
  describe.skipIf(!target.enabled)(`logprobs through the server on ${target.name} (openai client)`, () => {
    const model = target.make();
    let server: Server;
    let client: OpenAI;

    beforeAll(async () => {
      await model.load(target.path, { contextSize: 1024, threads: 1 });
      server = createServer(model, { modelId: "stories", chatTemplate: TEMPLATE });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      client = new OpenAI({ baseURL: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, apiKey: "unused", maxRetries: 0 });
    }, 60_000);
    afterAll(async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await model.unload();
    });

    it("chat: choices[].logprobs.content has one entry per token, as chat() reports them; streamed chunks add up to the same", async () => {
      const request = { model: "stories", messages: MESSAGES, max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 3 };
      const whole = await client.chat.completions.create(request);
      const content = whole.choices[0].logprobs?.content ?? [];
      expect(content).toHaveLength(whole.usage?.completion_tokens ?? -1);
      expect(content.map((c) => c.token).join("")).toBe(whole.choices[0].message.content);
      const lib = await model.chat(MESSAGES, { chatTemplate: TEMPLATE, maxTokens: 12, logprobs: true, topLogprobs: 3 });
      expectClose(content, (lib.logprobs ?? []).map((e) => ({
        token: e.token, logprob: e.logprob, bytes: e.bytes, top_logprobs: e.topLogprobs.map((t) => ({ token: t.token, logprob: t.logprob, bytes: t.bytes })),
      })));
      for (const c of content) expect(c.top_logprobs).toHaveLength(3);

      const streamed: typeof content = [];
      let text = "";
      for await (const chunk of await client.chat.completions.create({ ...request, stream: true })) {
        text += chunk.choices[0]?.delta.content ?? "";
        streamed.push(...(chunk.choices[0]?.logprobs?.content ?? []));
      }
      expect(text).toBe(whole.choices[0].message.content);
      expectClose(streamed, content);

      // Without the parameter, as before: null.
      const plain = await client.chat.completions.create({ model: "stories", messages: MESSAGES, max_tokens: 2 });
      expect(plain.choices[0].logprobs).toBeNull();
    });

    it("completions: logprobs n gives tokens, token_logprobs, top_logprobs (n alternatives and the chosen token) and text_offset; streamed the same", async () => {
      const request = { model: "stories", prompt: "Once upon a time", max_tokens: 12, temperature: 0, logprobs: 2 };
      const whole = await client.completions.create(request);
      const lp = whole.choices[0].logprobs;
      const tokens = lp?.tokens ?? [];
      expect(tokens).toHaveLength(whole.usage?.completion_tokens ?? -1);
      expect(tokens.join("")).toBe(whole.choices[0].text);
      expect(lp?.token_logprobs).toHaveLength(tokens.length);
      lp?.top_logprobs?.forEach((dict, i) => {
        expect(Object.keys(dict).length).toBeGreaterThanOrEqual(1);
        expect(Object.keys(dict).length).toBeLessThanOrEqual(3);
        // Greedy: the chosen token is the most likely one.
        expect(dict[tokens[i]]).toBe(lp.token_logprobs?.[i]);
        expect(Math.max(...Object.values(dict))).toBe(lp.token_logprobs?.[i]);
      });
      const offsets = lp?.text_offset ?? [];
      expect(offsets[0]).toBe(0);
      offsets.slice(1).forEach((o, i) => expect(o).toBe(offsets[i] + tokens[i].length));

      const joined = { tokens: [] as string[], token_logprobs: [] as number[], top_logprobs: [] as Record<string, number>[], text_offset: [] as number[] };
      for await (const chunk of await client.completions.create({ ...request, stream: true })) {
        const part = chunk.choices[0]?.logprobs;
        joined.tokens.push(...(part?.tokens ?? []));
        joined.token_logprobs.push(...(part?.token_logprobs ?? []));
        joined.top_logprobs.push(...(part?.top_logprobs ?? []));
        joined.text_offset.push(...(part?.text_offset ?? []));
      }
      expectClose(joined, lp);
    });

    it("chat with a forced tool call: one entry per token, also when the stream sends delta.tool_calls", async () => {
      const request = {
        model: "stories", messages: [{ role: "user" as const, content: "Weather in Oslo?" }], tools: [weatherTool],
        tool_choice: "required" as const, max_tokens: 100, temperature: 0, logprobs: true, top_logprobs: 2,
      };
      const whole = await client.chat.completions.create(request);
      expect(whole.choices[0].finish_reason).toBe("tool_calls");
      const content = whole.choices[0].logprobs?.content ?? [];
      expect(content).toHaveLength(whole.usage?.completion_tokens ?? -1);
      const call = whole.choices[0].message.tool_calls?.[0];
      expect(content.map((c) => c.token).join("")).toContain(call?.type === "function" ? call.function.arguments.slice(0, 8) : "?");
      const streamed: typeof content = [];
      let deltas = 0;
      let beforeFinish = 0;
      for await (const chunk of await client.chat.completions.create({ ...request, stream: true })) {
        const choice = chunk.choices[0];
        if (choice?.delta.tool_calls) {
          deltas++;
          expect(choice.logprobs?.content, "a tool-call delta carries its tokens' entries").toBeInstanceOf(Array);
        }
        streamed.push(...(choice?.logprobs?.content ?? []));
        if (!choice?.finish_reason) beforeFinish = streamed.length;
      }
      expect(deltas).toBeGreaterThan(0);
      // Entries go out with the text they belong to, not all at the end.
      expect(beforeFinish).toBeGreaterThan(content.length / 2);
      expectClose(streamed, content);
    });

    it("rejects top_logprobs over 20, and top_logprobs without logprobs, with a 400 naming the parameter", async () => {
      const cases: [() => Promise<unknown>, string][] = [
        [() => client.chat.completions.create({ model: "stories", messages: MESSAGES, logprobs: true, top_logprobs: 21 }), "top_logprobs"],
        [() => client.chat.completions.create({ model: "stories", messages: MESSAGES, top_logprobs: 2 }), "top_logprobs"],
        [() => client.completions.create({ model: "stories", prompt: "x", logprobs: 21 }), "logprobs"],
      ];
      for (const [call, param] of cases) {
        const error = await call().catch((e: unknown) => e);
        expect(error).toBeInstanceOf(OpenAI.BadRequestError);
        expect((error as InstanceType<typeof OpenAI.BadRequestError>).param).toBe(param);
      }
    });
  });
}
