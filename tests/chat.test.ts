/**
 * Chat: messages rendered with real models' Jinja templates (exact strings), template errors,
 * and a multi-turn conversation that reuses the KV cache so turn 2 evaluates only new tokens.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { MlxBackend } from "../lib/backends/mlx.js";
import { ChatTemplateError, renderChat, type ChatMessage } from "../lib/chat.js";
import { InvalidOptionError } from "../lib/errors.js";
import type { InferenceBackend } from "../lib/backend.js";
import { mlxAvailable } from "./support/mlx.js";

const shared = (p: string) => fileURLToPath(new URL(`../../shared/models/${p}`, import.meta.url));
const template = (name: string) => readFileSync(shared(`chat-templates/${name}.jinja`), "utf8");
const conversation: ChatMessage[] = [
  { role: "system", content: "You are terse." },
  { role: "user", content: "List files." },
];

describe("renderChat with real chat templates", () => {
  it("Qwen2.5: ChatML with the generation prompt", () => {
    const text = renderChat(conversation, { template: template("Qwen-Qwen2.5-7B-Instruct"), origin: "test" });
    expect(text).toBe("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nList files.<|im_end|>\n<|im_start|>assistant\n");
  });

  it("Llama-3.2: header tokens, BOS from the tokenizer", () => {
    const text = renderChat(conversation, { template: template("meta-llama-Llama-3.2-3B-Instruct"), bosToken: "<|begin_of_text|>", origin: "test" }, {
      templateVariables: { date_string: "21 Nov 2026" },
    });
    expect(text.startsWith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")).toBe(true);
    expect(text).toContain("You are terse.<|eot_id|>");
    expect(text.endsWith("<|start_header_id|>user<|end_header_id|>\n\nList files.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")).toBe(true);
  });

  it("no generation prompt when asked", () => {
    const text = renderChat(conversation, { template: template("Qwen-Qwen2.5-7B-Instruct"), origin: "test" }, { addGenerationPrompt: false });
    expect(text.endsWith("List files.<|im_end|>\n")).toBe(true);
  });

  it("gemma-2 rejects a system message with the template's own error", () => {
    expect(() => renderChat(conversation, { template: template("google-gemma-2-2b-it"), origin: "test" })).toThrow(ChatTemplateError);
    expect(() => renderChat(conversation, { template: template("google-gemma-2-2b-it"), origin: "test" })).toThrow(/System role not supported/);
  });

  it("a model without a template: a clear error that names where it looked and the way out", () => {
    expect(() => renderChat(conversation, { template: undefined, origin: "/models/x (tokenizer_config.json)" })).toThrow(
      /no chat template.*tokenizer_config\.json.*chatTemplate option/,
    );
  });
});

// A plain template for stories260K, which has none: each turn is a paragraph.
const STORY_TEMPLATE =
  "{{ bos_token }}{% for m in messages %}{{ m.content }}{% if not loop.last or m.role == 'assistant' %}\n{% endif %}{% endfor %}";

/** Two chat turns; turn 2 repeats turn 1 and its answer, so only the new tokens are evaluated. */
async function twoTurns(model: InferenceBackend & { chat: MlxBackend["chat"] }) {
  const first: ChatMessage[] = [{ role: "user", content: "Once upon a time, there was a little dog." }];
  const turn1 = await model.chat(first, { chatTemplate: STORY_TEMPLATE, maxTokens: 24, temperature: 0 });
  const second: ChatMessage[] = [...first, turn1.message, { role: "user", content: "The dog was happy." }];
  const turn2 = await model.chat(second, { chatTemplate: STORY_TEMPLATE, maxTokens: 24, temperature: 0 });
  return { turn1, turn2 };
}

describe.skipIf(!mlxAvailable)("chat on the MLX engine (stories260K, explicit template)", () => {
  it("turn 2 evaluates only the tokens that are new", async () => {
    const mlx = new MlxBackend();
    await mlx.load(shared("stories260K/hf-f32"));
    try {
      const { turn1, turn2 } = await twoTurns(mlx);
      console.log(`[chat mlx] turn 1: ${turn1.usage.evaluatedPromptTokens}/${turn1.usage.promptTokens} prompt tokens evaluated; turn 2: ${turn2.usage.evaluatedPromptTokens}/${turn2.usage.promptTokens}`);
      expect(turn1.message.content.length).toBeGreaterThan(0);
      expect(turn2.usage.promptTokens).toBeGreaterThan(turn1.usage.promptTokens);
      // Turn 1 starts from an empty cache; turn 2 re-uses everything up to turn 1's answer.
      expect(turn1.usage.evaluatedPromptTokens).toBe(turn1.usage.promptTokens);
      expect(turn2.usage.evaluatedPromptTokens).toBeGreaterThan(0);
      expect(turn2.usage.evaluatedPromptTokens).toBeLessThan(turn2.usage.promptTokens - turn1.usage.promptTokens + 2);
    } finally {
      await mlx.unload();
    }
  });

  it("a model without a template and no chatTemplate option: ChatTemplateError; bad messages: InvalidOptionError", async () => {
    const mlx = new MlxBackend();
    await mlx.load(shared("stories260K/hf-f32"));
    try {
      await expect(mlx.chat(conversation)).rejects.toThrow(ChatTemplateError);
      await expect(mlx.chat([] as ChatMessage[])).rejects.toThrow(InvalidOptionError);
      await expect(mlx.chat([{ role: "user" } as ChatMessage])).rejects.toThrow(InvalidOptionError);
    } finally {
      await mlx.unload();
    }
  });
});

export { twoTurns, STORY_TEMPLATE };
