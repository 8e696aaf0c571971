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
import { validateJson } from "../lib/eval/json-validate.js";
import { detectToolCallFormat, parseToolCalls, type ChatTool } from "../lib/tools.js";
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
    const rendered = renderChat(conversation, { template: text, bosToken: "<s>", eosToken: "</s>", origin: "test" }, {}, TOOLS);
    expect(rendered).toContain("Current weather in a city"); // the tool definitions
    expect(rendered).toContain('"city": "Paris"'); // the call, arguments as the template writes them (tojson)
    expect(rendered).toMatch(/temperature\\?": 21/); // the result (Llama 3.1's template writes it through tojson)
    if (format === "hermes") expect(rendered).toContain("<tool_call>");
    if (format === "mistral") expect(rendered).toContain('[TOOL_CALLS][{"name": "get_weather"');
  });
});

async function forcedCalls(backend: BaseBackend): Promise<void> {
  for (const [format, chatTemplate] of Object.entries(TEMPLATES)) {
    for (let seed = 0; seed < 2; seed++) {
      const toolChoice = seed % 2 === 0 ? ("required" as const) : { type: "function" as const, function: { name: "run_command" } };
      const r = await backend.chat(QUESTION, { chatTemplate, tools: TOOLS, toolChoice, temperature: 1, seed, maxTokens: 60 + seed * 20 });
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
