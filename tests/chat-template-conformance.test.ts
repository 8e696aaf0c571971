/**
 * renderChat against transformers' apply_chat_template(tokenize=False) (tests/python/chat_template_reference.py):
 * 24 conversations (system, multi-turn, generation prompt on and off, tools, tool results, unicode,
 * template errors) on every shared chat template, the shared tokenizer directories with a template,
 * and the real models' templates as the MLX backend reads them (Tokenizer.fromDirectory).
 */
import { readFileSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";
import { ChatTemplateError, renderChat, type ChatMessage, type ChatTemplateSource } from "../lib/chat.js";
import { Tokenizer } from "../lib/tokenizer.js";
import { pythonModules } from "./support/python.js";
import { realModels } from "./support/real-models.js";
import { cachedReference, hashFiles } from "./support/reference-cache.js";

const MODELS = fileURLToPath(new URL("../../shared/models/", import.meta.url));
const TEMPLATES = `${MODELS}chat-templates/`;

/** The special tokens each bare template's model has (what apply_chat_template would pass as variables). */
const SPECIAL_TOKENS: Record<string, { bos_token?: string; eos_token: string }> = {
  "HuggingFaceTB-SmolLM3-3B": { bos_token: "<|im_start|>", eos_token: "<|im_end|>" },
  "Qwen-QwQ-32B": { eos_token: "<|im_end|>" },
  "Qwen-Qwen2.5-7B-Instruct": { eos_token: "<|im_end|>" },
  "Qwen-Qwen3-0.6B": { eos_token: "<|im_end|>" },
  "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": { bos_token: "<｜begin▁of▁sentence｜>", eos_token: "<｜end▁of▁sentence｜>" },
  "google-gemma-2-2b-it": { bos_token: "<bos>", eos_token: "<eos>" },
  "meta-llama-Llama-3.1-8B-Instruct": { bos_token: "<|begin_of_text|>", eos_token: "<|eot_id|>" },
  "meta-llama-Llama-3.2-3B-Instruct": { bos_token: "<|begin_of_text|>", eos_token: "<|eot_id|>" },
  "microsoft-Phi-3.5-mini-instruct": { bos_token: "<s>", eos_token: "<|endoftext|>" },
  "mistralai-Mistral-Nemo-Instruct-2407": { bos_token: "<s>", eos_token: "</s>" },
};

const weatherTool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather for a city.",
    parameters: {
      type: "object",
      properties: { city: { type: "string", description: "City name, e.g. Zürich" }, unit: { type: "string", enum: ["celsius", "fahrenheit"] } },
      required: ["city"],
    },
  },
};
const shellTool = {
  type: "function",
  function: {
    name: "run_shell",
    description: "Run one shell command and return its output.",
    parameters: { type: "object", properties: { command: { type: "string" }, timeout: { type: "integer", minimum: 1 } }, required: ["command"] },
  },
};

interface Conversation {
  name: string;
  messages: ChatMessage[];
  tools?: object[];
  addGenerationPrompt: boolean;
  variables?: Record<string, unknown>;
}

const sys = (content: string): ChatMessage => ({ role: "system", content });
const user = (content: string): ChatMessage => ({ role: "user", content });
const bot = (content: string): ChatMessage => ({ role: "assistant", content });
const DATE = { date_string: "01 Dec 2026" };

const CONVERSATIONS: Conversation[] = [
  { name: "user", messages: [user("List files, newest first.")], addGenerationPrompt: true },
  { name: "user, no generation prompt", messages: [user("List files, newest first.")], addGenerationPrompt: false },
  { name: "system + user", messages: [sys("Answer with one shell command."), user("Show disk usage.")], addGenerationPrompt: true },
  { name: "system + user, no generation prompt", messages: [sys("Be terse."), user("Hi")], addGenerationPrompt: false },
  { name: "multi-turn", messages: [user("Hi!"), bot("Hello! How can I help?"), user("Count to three.")], addGenerationPrompt: true },
  { name: "multi-turn with system", messages: [sys("You are a pirate."), user("Hi"), bot("Arr!"), user("Where is the treasure?")], addGenerationPrompt: true },
  { name: "ends with assistant", messages: [user("2+2?"), bot("4")], addGenerationPrompt: false },
  { name: "ends with assistant + generation prompt", messages: [user("2+2?"), bot("4")], addGenerationPrompt: true },
  {
    name: "six turns",
    messages: [user("a"), bot("b"), user("c"), bot("d"), user("e"), bot("f"), user("g")],
    addGenerationPrompt: true,
  },
  { name: "unicode and emoji", messages: [user("Traduis «bonjour» en 日本語 👋🏽 — et en עברית?")], addGenerationPrompt: true },
  { name: "combining marks, ZWJ", messages: [sys("Réponds en français."), user("e\u0301 👨‍👩‍👧 ﬁ")], addGenerationPrompt: true },
  { name: "whitespace around content", messages: [user("  padded question  \n\n"), bot("\n answer \n"), user("\tnext")], addGenerationPrompt: true },
  { name: "empty content", messages: [user("")], addGenerationPrompt: true },
  { name: "code block", messages: [user("Fix this:\n```python\ndef f(x):\n\treturn x+1\n```")], addGenerationPrompt: true },
  { name: "template-like text", messages: [user("Literal {{ braces }} and {% tags %} and <|im_end|> stay text.")], addGenerationPrompt: true },
  { name: "tools", messages: [user("Weather in Zürich?")], tools: [weatherTool], addGenerationPrompt: true },
  { name: "tools with system", messages: [sys("Use tools when needed."), user("Weather in Paris, in fahrenheit?")], tools: [weatherTool, shellTool], addGenerationPrompt: true },
  { name: "tools, multi-turn", messages: [user("Run ls"), bot("Running it."), user("Now df -h")], tools: [shellTool], addGenerationPrompt: true },
  { name: "tool result", messages: [user("Weather in Oslo?"), bot("Let me check."), { role: "tool", content: '{"temp": -3}' }], tools: [weatherTool], addGenerationPrompt: true },
  { name: "consecutive user messages", messages: [user("first"), user("second")], addGenerationPrompt: true },
  { name: "system only", messages: [sys("Only a system prompt.")], addGenerationPrompt: true },
  { name: "thinking off", messages: [user("Quick answer: capital of France?")], addGenerationPrompt: true, variables: { enable_thinking: false } },
  { name: "reasoning in an assistant turn", messages: [user("1+1?"), bot("<think>\nsimple\n</think>\n\n2"), user("2+2?")], addGenerationPrompt: true },
  { name: "date variable", messages: [sys("Be brief."), user("What day is it?")], addGenerationPrompt: true, variables: DATE },
];

interface TemplateCase {
  name: string;
  /** Our side: the template source the backends would use. */
  source: () => Promise<ChatTemplateSource>;
  /** Their side (the Python spec entry). */
  spec: { name: string; dir: string } | { name: string; template: string; specialTokens: Record<string, string> };
  files: string[];
}

function bareTemplate(name: string, text: string, tokens: { bos_token?: string; eos_token?: string }): TemplateCase {
  const specialTokens = Object.fromEntries(Object.entries(tokens).filter(([, v]) => v !== undefined)) as Record<string, string>;
  return {
    name,
    source: async () => ({ template: text, bosToken: tokens.bos_token, eosToken: tokens.eos_token, origin: name }),
    spec: { name, template: text, specialTokens },
    files: [],
  };
}

function directoryTemplate(name: string, dir: string): TemplateCase {
  return {
    name,
    source: async () => {
      const t = await Tokenizer.fromDirectory(dir);
      return { template: t.chatTemplate, bosToken: t.bosToken, eosToken: t.eosToken, origin: dir };
    },
    spec: { name, dir },
    files: [`${dir}/tokenizer.json`, `${dir}/tokenizer_config.json`, `${dir}/chat_template.jinja`],
  };
}

/** A tokenizer_config.json without its tokenizer.json (Qwen): the template and tokens come from the config on both sides. */
function configTemplate(name: string, dir: string): TemplateCase {
  const config = JSON.parse(readFileSync(`${dir}/tokenizer_config.json`, "utf8")) as { chat_template: string; bos_token?: string | null; eos_token?: string | null };
  return bareTemplate(name, config.chat_template, { bos_token: config.bos_token ?? undefined, eos_token: config.eos_token ?? undefined });
}

const python = pythonModules(["transformers", "jinja2"]);
const real = realModels();

const CASES: TemplateCase[] = [
  ...readdirSync(TEMPLATES)
    .filter((f) => f.endsWith(".jinja"))
    .sort()
    .map((f) => {
      const name = f.replace(/\.jinja$/, "");
      return bareTemplate(name, readFileSync(TEMPLATES + f, "utf8"), SPECIAL_TOKENS[name] ?? { eos_token: "</s>" });
    }),
  directoryTemplate("tokenizers/phi-3-mini", `${MODELS}tokenizers/phi-3-mini`),
  directoryTemplate("tokenizers/llama3.2-reconstructed", `${MODELS}tokenizers/llama3.2-reconstructed`),
  configTemplate("tokenizers/qwen2.5", `${MODELS}tokenizers/qwen2.5`),
  configTemplate("tokenizers/qwen3", `${MODELS}tokenizers/qwen3`),
  ...real.models.map((m) => directoryTemplate(m.name, m.hf)),
];

interface Rendered {
  text?: string;
  error?: string;
  errorType?: string;
}

/** Today as strftime_now sees it: templates that read it (Llama 3.2) render today's date, so the reference is redone daily. */
function localDate(): string {
  const d = new Date();
  return `${d.getFullYear()}-${d.getMonth() + 1}-${d.getDate()}`;
}

describe("chat templates (transformers)", () => {
  let reference: Record<string, Record<string, Rendered>> = {};
  beforeAll(() => {
    if (!python.available) return;
    const spec = { templates: CASES.map((c) => c.spec), conversations: CONVERSATIONS };
    const keys = [JSON.stringify(python.versions), localDate(), ...CASES.flatMap((c) => c.files.map((f) => hashFiles(f.replace(/\/[^/]+$/, ""), [f.replace(/^.*\//, "")])))];
    reference = cachedReference<{ results: typeof reference }>("chat-template-reference", "chat_template_reference.py", spec, keys).results;
  }, 300_000);

  for (const c of CASES) {
    it.skipIf(!python.available)(`${c.name}: ${CONVERSATIONS.length} conversations render as apply_chat_template does`, async () => {
      const source = await c.source();
      const diffs: string[] = [];
      let rendered = 0;
      let errors = 0;
      for (const conv of CONVERSATIONS) {
        const want = reference[c.name][conv.name];
        let got: Rendered;
        try {
          got = { text: renderChat(conv.messages, source, { addGenerationPrompt: conv.addGenerationPrompt, tools: conv.tools, templateVariables: conv.variables }) };
        } catch (error) {
          if (!(error instanceof ChatTemplateError)) throw error;
          got = { error: error.message };
        }
        if (want.text !== undefined) {
          rendered++;
          if (got.text !== want.text) diffs.push(`${conv.name}:\n    expected ${JSON.stringify(want.text)}\n    got      ${JSON.stringify(got.text ?? got.error)}`);
        } else {
          errors++;
          // Both refuse; a template's own raise_exception message must come through.
          if (got.error === undefined) diffs.push(`${conv.name}: expected ${want.errorType}: ${want.error}\n    got text ${JSON.stringify(got.text)}`);
          else if (want.errorType === "TemplateError" && !got.error.includes(want.error!)) diffs.push(`${conv.name}: expected message ${JSON.stringify(want.error)}, got ${JSON.stringify(got.error)}`);
        }
      }
      console.log(`[chat templates (transformers)] ${c.name}: ${rendered} rendered, ${errors} refused by the template; ${diffs.length} differ`);
      expect(diffs.slice(0, 4).join("\n"), `${diffs.length} of ${CONVERSATIONS.length} conversations differ`).toBe("");
    });
  }
});
