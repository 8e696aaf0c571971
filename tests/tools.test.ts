/**
 * Tool calling through real chat templates (Qwen2.5: hermes, Llama 3.1: JSON, Mistral Nemo:
 * [TOOL_CALLS]) on the tiny stories260K model, both backends: forced calls always parse and their
 * arguments validate (ajv) against the tool's parameters; tool definitions, calls and results
 * round-trip through each template; "auto" answers in text when the model writes no call.
 */
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GgufBackend } from "../lib/backends/gguf.js";
import { MlxBackend } from "../lib/backends/mlx.js";
import type { BaseBackend } from "../lib/backends/base.js";
import { renderChat, type ChatMessage } from "../lib/chat.js";
import { InvalidOptionError } from "../lib/errors.js";
import { validateJson } from "../lib/json-schema/validate.js";
import { JsonGenerationDriver } from "../lib/json-schema/driver.js";
import { TokenConstraint } from "../lib/json-schema/token-constraint.js";
import { vocabularyFromTokenizer } from "../lib/json-schema/vocab.js";
import { Tokenizer } from "../lib/tokenizer.js";
import { checkTools, detectToolCallFormat, parseToolCalls, toolCallConstraint, ToolCallStreamer, type ChatTool } from "../lib/tools.js";
import { mlxAvailable, mlxSkipReason } from "./support/mlx.js";

const MODELS = new URL("../../shared/models/", import.meta.url).pathname;
const template = (name: string) => readFileSync(`${MODELS}chat-templates/${name}.jinja`, "utf8");
const TEMPLATES = {
  hermes: template("Qwen-Qwen2.5-7B-Instruct"),
  llama3: template("meta-llama-Llama-3.1-8B-Instruct"),
  mistral: template("mistralai-Mistral-Nemo-Instruct-2407"),
} as const;

const TOOLS: ChatTool[] = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Current weather in a city",
      parameters: { type: "object", properties: { city: { type: "string", maxLength: 20 }, unit: { enum: ["celsius", "fahrenheit"] } }, required: ["city", "unit"], additionalProperties: false },
    },
  },
  {
    type: "function",
    function: {
      name: "run_command",
      description: "Run a shell command",
      parameters: { type: "object", properties: { argv: { type: "array", items: { type: "string", maxLength: 10 }, minItems: 1, maxItems: 3 }, timeout: { type: "integer", minimum: 1, maximum: 60 } }, required: ["argv"] },
    },
  },
];
const QUESTION: ChatMessage[] = [{ role: "user", content: "What is the weather in Paris?" }];

describe("tool call formats", () => {
  it("are detected from the chat templates", () => {
    expect(detectToolCallFormat(TEMPLATES.hermes)).toBe("hermes");
    expect(detectToolCallFormat(TEMPLATES.llama3)).toBe("llama3");
    expect(detectToolCallFormat(TEMPLATES.mistral)).toBe("mistral");
    expect(detectToolCallFormat(template("Qwen-Qwen3-0.6B"))).toBe("hermes");
    expect(detectToolCallFormat(template("google-gemma-2-2b-it"))).toBeUndefined();
  });

  it("parse the calls each format writes, and leave other text alone", () => {
    const call = { name: "get_weather", arguments: { city: "Paris", unit: "celsius" } };
    const hermes = parseToolCalls(`Let me check.<tool_call>\n${JSON.stringify(call)}\n</tool_call>`, "hermes", TOOLS);
    expect(hermes?.content).toBe("Let me check.");
    expect(hermes?.calls.map((c) => [c.function.name, JSON.parse(c.function.arguments)])).toEqual([["get_weather", call.arguments]]);
    expect(parseToolCalls(`{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "celsius"}}`, "llama3", TOOLS)?.calls[0].function.arguments).toBe('{"city":"Oslo","unit":"celsius"}');
    const two = parseToolCalls(`[TOOL_CALLS][${JSON.stringify(call)}, {"name": "run_command", "arguments": {"argv": ["ls"]}}]`, "mistral", TOOLS);
    expect(two?.calls.map((c) => c.function.name)).toEqual(["get_weather", "run_command"]);
    expect(two?.calls[0].id).toMatch(/^[A-Za-z0-9]{9}$/);
    expect(parseToolCalls("Once upon a time", "hermes", TOOLS)).toBeUndefined();
    expect(parseToolCalls('<tool_call>{"name": "unknown", "arguments": {}}</tool_call>', "hermes", TOOLS)).toBeUndefined();
  });

  it.each(Object.entries(TEMPLATES))("%s: tools, calls and results round-trip through the template", (format, text) => {
    const conversation: ChatMessage[] = [
      ...QUESTION,
      { role: "assistant", content: null, toolCalls: [{ id: "abcDEF123", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris","unit":"celsius"}' } }] },
      { role: "tool", content: '{"temperature": 21}', toolCallId: "abcDEF123", name: "get_weather" },
    ];
    const rendered = renderChat(conversation, { template: text, bosToken: "<s>", eosToken: "</s>", origin: "test" }, { tools: TOOLS });
    expect(rendered).toContain("Current weather in a city"); // the tool definitions
    expect(rendered).toContain('"city": "Paris"'); // the call, arguments as the template writes them (tojson)
    expect(rendered).toMatch(/temperature\\?": 21/); // the result (Llama 3.1's template writes it through tojson)
    if (format === "hermes") expect(rendered).toContain("<tool_call>");
    if (format === "mistral") expect(rendered).toContain('[TOOL_CALLS][{"name": "get_weather"');
  });
});

describe("toolChoice auto: a call is constrained once it starts", () => {
  it("free text, then the hermes marker switches the automaton on, and off again after the call", async () => {
    const tokenizer = await Tokenizer.fromDirectory(`${MODELS}stories260K/hf-f32`);
    const vocab = await vocabularyFromTokenizer(tokenizer, tokenizer.vocabSize);
    const constraint = new TokenConstraint(toolCallConstraint(checkTools(TOOLS, "auto", undefined, undefined)!, "hermes")!, vocab);
    const allowed = (driver: JsonGenerationDriver) => {
      const mask = driver.mask()!;
      let n = 0;
      for (let id = 0; id < vocab.size; id++) if (mask[id >>> 5] & (1 << (id & 31))) n++;
      return n;
    };
    // Pushes the tokens of `text` (tokenized whole, as a model would write it), noting when the
    // driver started constraining and how many tokens were allowed right after that.
    const write = (driver: JsonGenerationDriver, text: string) => {
      const seen: { at: string; constraining: boolean; allowed: number }[] = [];
      let at = "";
      for (const t of tokenizer.encode(text, { addSpecialTokens: false })) {
        driver.push(t);
        at += tokenizer.decode([t]);
        seen.push({ at, constraining: driver.constraining, allowed: allowed(driver) });
      }
      return seen;
    };
    const driver = new JsonGenerationDriver(constraint, 300);
    expect(allowed(driver)).toBe(vocab.size); // free
    const call = '{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}';
    const seen = write(driver, `Let me look. <tool_call>\n${call}\n</tool_call>`);
    const first = seen.findIndex((s) => s.constraining);
    expect(seen[first].at).toMatch(/<tool_call>\n?$/); // on from the marker on
    expect(seen.slice(0, first).every((s) => s.allowed === vocab.size)).toBe(true);
    expect(seen[first].allowed).toBeLessThan(vocab.size / 4);
    expect(seen.at(-1)).toMatchObject({ constraining: false, allowed: vocab.size }); // free again after the call
    // A call of an unknown tool is not allowed once the marker is written.
    expect(() => write(new JsonGenerationDriver(constraint, 300), 'Ok <tool_call>\n{"name": "rm_rf"')).toThrow(/did not allow/);
  });

  it("streams content, then the call's id, name and arguments as they form", () => {
    const streamer = new ToolCallStreamer("hermes");
    const text = 'Checking.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}\n</tool_call>';
    const deltas = [...text].flatMap((c) => streamer.push(c));
    expect(deltas.filter((d) => "content" in d).map((d) => (d as { content: string }).content).join("")).toBe("Checking.");
    const calls = deltas.filter((d) => !("content" in d)) as { index: number; id?: string; name?: string; arguments: string }[];
    expect(calls[0]).toMatchObject({ index: 0, name: "get_weather", arguments: "" });
    expect(calls.map((d) => d.arguments).join("")).toBe('{"city": "Oslo", "unit": "celsius"}');
    expect(calls.length).toBeGreaterThan(10);
  });
});

async function forcedCalls(backend: BaseBackend): Promise<void> {
  // One forced call per format, "required" and a named tool in turn (each renders a long prompt).
  for (const [seed, [format, chatTemplate]] of Object.entries(TEMPLATES).entries()) {
    {
      const toolChoice = seed % 2 === 0 ? ("required" as const) : { type: "function" as const, function: { name: "run_command" } };
      const r = await backend.chat(QUESTION, { chatTemplate, tools: TOOLS, toolChoice, temperature: 1, seed, maxTokens: 100 });
      const label = `${format} seed ${seed}: ${r.text}`;
      expect(r.finishReason, label).toBe("toolCalls");
      expect(r.message.toolCalls?.length, label).toBeGreaterThanOrEqual(1);
      for (const call of r.message.toolCalls ?? []) {
        const tool = TOOLS.find((t) => t.function.name === call.function.name)!;
        if (typeof toolChoice === "object") expect(call.function.name).toBe("run_command");
        expect(validateJson(JSON.parse(call.function.arguments), tool.function.parameters!), label).toEqual([]);
      }
    }
  }
  // chatStream: the chunks carry the call's pieces as they form, and they add up to the result's call.
  const stream = backend.chatStream(QUESTION, { chatTemplate: TEMPLATES.hermes, tools: TOOLS, toolChoice: "required", temperature: 1, seed: 5, maxTokens: 100 });
  let args = "";
  let name: string | undefined;
  for await (const chunk of stream) {
    for (const d of chunk.deltas ?? []) {
      if ("content" in d) continue;
      name ??= d.name;
      args += d.arguments;
    }
  }
  const streamed = await stream.result;
  expect(stream.toolCallFormat).toBe("hermes");
  expect(name).toBe(streamed.message.toolCalls![0].function.name);
  expect(JSON.parse(args)).toEqual(JSON.parse(streamed.message.toolCalls![0].function.arguments));
  // "auto": a story model writes text, which comes back as content.
  const auto = await backend.chat(QUESTION, { chatTemplate: TEMPLATES.hermes, tools: TOOLS, temperature: 0, maxTokens: 12 });
  expect(auto.finishReason).not.toBe("toolCalls");
  expect(auto.message.content).toBe(auto.text);
  // Bad tool options are refused by name before any work.
  await expect(backend.chat(QUESTION, { chatTemplate: TEMPLATES.hermes, tools: TOOLS, toolChoice: { type: "function", function: { name: "nope" } } })).rejects.toThrow(/toolChoice/);
  await expect(backend.chat(QUESTION, { chatTemplate: TEMPLATES.hermes, tools: [{ type: "function", function: { name: "f", parameters: { type: "object", properties: { a: { not: {} } } } } }], toolChoice: "required" })).rejects.toThrow(/tools\[0\]\.function\.parameters.*unsupported keyword "not"/);
  await expect(backend.chat(QUESTION, { chatTemplate: template("google-gemma-2-2b-it"), tools: TOOLS, toolChoice: "required" })).rejects.toBeInstanceOf(InvalidOptionError);
}

describe("tool calls on GGUF (stories260K, ajv)", () => {
  const gguf = new GgufBackend();
  beforeAll(() => gguf.load(`${MODELS}stories260K/stories260K.gguf`, { threads: 1 }));
  afterAll(() => gguf.unload());
  it("forced calls parse and validate in every format; auto gives text", () => forcedCalls(gguf), 120_000);
});

describe("tool calls on MLX (stories260K, ajv)", () => {
  if (!mlxAvailable) console.warn(`MLX tool-call tests skipped: ${mlxSkipReason}`);
  const mlx = new MlxBackend();
  beforeAll(async () => {
    if (mlxAvailable) await mlx.load(`${MODELS}stories260K/mlx-4bit`);
  });
  afterAll(() => mlx.unload());
  it.skipIf(!mlxAvailable)("forced calls parse and validate in every format; auto gives text", () => forcedCalls(mlx), 120_000);
});
