/**
 * Chat prompts: messages rendered with the model's own Jinja chat template (@huggingface/jinja),
 * as Hugging Face's `apply_chat_template` does, ready to be tokenized without extra special tokens.
 */
import { Environment, Template } from "@huggingface/jinja";
import type { GenerateChunk, GenerateOptions, GenerateResult } from "./backend.js";
import { ChatTemplateError, InvalidOptionError } from "./errors.js";
import { checkTools, type ChatTool, type ToolCall, type ToolCallFormat, type ToolChoice, type ToolSetup, type ToolStreamDelta } from "./tools.js";

/** Kept here too: it was defined in this module before it joined lib/errors.ts. */
export { ChatTemplateError } from "./errors.js";

/**
 * One message of a conversation. An assistant message may carry `toolCalls` (its content may
 * then be null); a `tool` message answers the call named by `toolCallId`.
 */
export interface ChatMessage {
  role: "system" | "user" | "assistant" | "tool" | (string & {});
  content: string | null;
  toolCalls?: ToolCall[];
  toolCallId?: string;
  name?: string;
}

/** Options for `chat` and `chatStream`: generation options plus template control. */
export interface ChatOptions extends GenerateOptions {
  /** A Jinja chat template to use instead of the model's own (required when the model has none). */
  chatTemplate?: string;
  /** End the prompt with the template's assistant header so the model answers. Defaults to true. */
  addGenerationPrompt?: boolean;
  /** Extra variables for the template (for example `enable_thinking: false` for Qwen3). Defaults to none. */
  templateVariables?: Record<string, unknown>;
  /** Functions the model may call, in OpenAI's shape; passed to the template as `tools`. Defaults to none. */
  tools?: ChatTool[];
  /** "auto" (default), "none", "required", or `{ type: "function", function: { name } }`. */
  toolChoice?: ToolChoice;
  /** Whether the model may make several calls in one answer. Defaults to true. */
  parallelToolCalls?: boolean;
  /** Call syntax ("hermes", "llama3", "mistral"). Defaults to the one the chat template shows. */
  toolCallFormat?: ToolCallFormat;
}

/** The result of `chat`: a generation result plus the answer as an assistant message. */
export interface ChatResult extends GenerateResult {
  message: { role: "assistant"; content: string | null; toolCalls?: ToolCall[] };
}

/** A piece of a streamed chat answer. */
export interface ChatChunk extends GenerateChunk {
  /**
   * With tools offered: the text split into content and tool-call pieces as they form (a call's
   * id and name once written, then its arguments text piece by piece). Undefined otherwise.
   */
  deltas?: ToolStreamDelta[];
}

/** The stream of a chat answer: chunks, the {@link ChatResult}, and the call syntax when tools were offered. */
export interface ChatStream extends AsyncIterable<ChatChunk> {
  readonly result: Promise<ChatResult>;
  /** How this answer writes tool calls (undefined without tools or with toolChoice "none"). */
  readonly toolCallFormat?: ToolCallFormat;
}

/** What a backend knows about its model's chat formatting. */
export interface ChatTemplateSource {
  template: string | undefined;
  bosToken?: string;
  eosToken?: string;
  /** Where the template came from, for error messages (a file or GGUF metadata). */
  origin: string;
}

const CHAT_KEYS = ["chatTemplate", "addGenerationPrompt", "templateVariables", "tools"] as const;

/** The template options of {@link ChatOptions}. */
export type ChatTemplateOptions = Pick<ChatOptions, (typeof CHAT_KEYS)[number]>;

/** Splits chat options into template options, tool options and the generation options left over. */
export function splitChatOptions(options: ChatOptions = {}): {
  chat: ChatTemplateOptions;
  tools: ToolSetup | undefined;
  generate: GenerateOptions;
} {
  if (typeof options !== "object" || options === null) throw new InvalidOptionError("options", "an object", options);
  const { chatTemplate, addGenerationPrompt, templateVariables, tools, toolChoice, parallelToolCalls, toolCallFormat, ...generate } = options;
  if (chatTemplate !== undefined && (typeof chatTemplate !== "string" || chatTemplate.length === 0)) {
    throw new InvalidOptionError("chatTemplate", "a non-empty Jinja template string", chatTemplate);
  }
  if (addGenerationPrompt !== undefined && typeof addGenerationPrompt !== "boolean") {
    throw new InvalidOptionError("addGenerationPrompt", "a boolean", addGenerationPrompt);
  }
  if (templateVariables !== undefined && (typeof templateVariables !== "object" || templateVariables === null)) {
    throw new InvalidOptionError("templateVariables", "an object", templateVariables);
  }
  const toolSetup = checkTools(tools, toolChoice, parallelToolCalls, toolCallFormat);
  return { chat: { chatTemplate, addGenerationPrompt, templateVariables }, tools: toolSetup, generate };
}

/** Checks the messages argument. */
export function checkMessages(messages: unknown): ChatMessage[] {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new InvalidOptionError("messages", "a non-empty array of { role, content }", messages);
  }
  messages.forEach((m, i) => {
    const callsOnly = m?.role === "assistant" && Array.isArray(m.toolCalls) && (m.content === null || m.content === undefined);
    if (typeof m !== "object" || m === null || typeof m.role !== "string" || (typeof m.content !== "string" && !callsOnly)) {
      throw new InvalidOptionError(`messages[${i}]`, "an object with string role and content (content may be null on an assistant message with toolCalls)", m);
    }
    if (m.toolCalls !== undefined) {
      const ok = Array.isArray(m.toolCalls) && m.toolCalls.every((c: ToolCall) => typeof c?.function?.name === "string" && typeof c.function.arguments === "string");
      if (!ok) throw new InvalidOptionError(`messages[${i}].toolCalls`, '[{ id, type: "function", function: { name, arguments: JSON text } }]', m.toolCalls);
    }
    if (m.role === "tool" && m.toolCallId !== undefined && typeof m.toolCallId !== "string") throw new InvalidOptionError(`messages[${i}].toolCallId`, "a string", m.toolCallId);
  });
  return messages as ChatMessage[];
}

type JinjaValue = { value: unknown };
type JinjaFunction = (args: JinjaValue[]) => JinjaValue;

/**
 * Python's `str.strip/lstrip/rstrip(chars)` remove any of `chars` from the ends; @huggingface/jinja
 * 0.5.11 ignores the argument and always strips whitespace, so Qwen3's `content.lstrip('\n')` ate
 * the spaces of an assistant turn that transformers keeps. The library exports neither its string
 * value class nor its function value class, so they are reached through a value the environment
 * makes, and the three methods of every string value's method table are replaced once.
 */
function patchStripMethods(): void {
  const env = new Environment();
  env.set("probe", "");
  const probe = env.lookupVariable("probe") as unknown as { builtins: Map<string, JinjaValue> };
  const proto = Object.getPrototypeOf(probe) as object;
  const getter = Object.getOwnPropertyDescriptor(proto, "builtins")?.get;
  const stripFn = probe.builtins.get("strip");
  if (!getter || !stripFn) return; // a later library version changed shape: keep its own methods
  const StringValue = probe.constructor as new (value: string) => JinjaValue;
  const FunctionValue = stripFn.constructor as new (fn: JinjaFunction) => JinjaValue;
  const patched = new WeakSet<Map<string, JinjaValue>>();
  const strip = (text: string, chars: unknown, start: boolean, end: boolean): string => {
    if (typeof chars !== "string") return start && end ? text.trim() : start ? text.trimStart() : text.trimEnd();
    const set = new Set(chars);
    let from = 0;
    let to = text.length;
    if (start) while (from < to && set.has(text[from])) from++;
    if (end) while (to > from && set.has(text[to - 1])) to--;
    return text.slice(from, to);
  };
  Object.defineProperty(proto, "builtins", {
    configurable: true,
    get(this: JinjaValue) {
      const map = getter.call(this) as Map<string, JinjaValue>;
      if (!patched.has(map)) {
        patched.add(map);
        const text = this.value as string;
        for (const [name, start, end] of [["strip", true, true], ["lstrip", true, false], ["rstrip", false, true]] as const) {
          map.set(name, new FunctionValue((args) => new StringValue(strip(text, args[0]?.value, start, end))));
        }
      }
      return map;
    },
  });
}
patchStripMethods();

/**
 * Messages as chat templates read them (transformers' shape): `tool_calls` with `arguments` as an
 * object (templates apply `tojson` to it), `tool_call_id` on tool results.
 */
function templateMessages(messages: ChatMessage[]): Record<string, unknown>[] {
  return messages.map((m) => {
    const out: Record<string, unknown> = { role: m.role, content: m.content ?? "" };
    if (m.name !== undefined) out.name = m.name;
    if (m.toolCallId !== undefined) out.tool_call_id = m.toolCallId;
    if (m.toolCalls) {
      out.tool_calls = m.toolCalls.map((c) => {
        let args: unknown;
        try {
          args = JSON.parse(c.function.arguments);
        } catch {
          throw new InvalidOptionError("messages", "tool call arguments that are JSON text", c.function.arguments);
        }
        return { id: c.id, type: "function", function: { name: c.function.name, arguments: args } };
      });
    }
    return out;
  });
}

// Parsing a template is far costlier than rendering it; a model has one or two.
const parsed = new Map<string, Template>();

/**
 * Renders `messages` with a chat template.
 * @throws ChatTemplateError when there is no template or it fails (including the template's own `raise_exception`).
 */
export function renderChat(
  messages: ChatMessage[],
  source: ChatTemplateSource,
  chat: ChatTemplateOptions = {},
): string {
  const text = chat.chatTemplate ?? source.template;
  if (!text) {
    throw new ChatTemplateError(
      `The model has no chat template (looked in ${source.origin}): pass one with the chatTemplate option, or use generate() with a plain prompt`,
    );
  }
  let template = parsed.get(text);
  try {
    if (!template) {
      template = new Template(text);
      parsed.set(text, template);
    }
    // The variables apply_chat_template gives: messages, tools and documents (null when absent), the
    // generation flag and the special tokens, which template variables may override.
    // raise_exception and strftime_now are built into @huggingface/jinja; a raise lands in the catch below.
    return template.render({
      bos_token: source.bosToken ?? "",
      eos_token: source.eosToken ?? "",
      ...chat.templateVariables,
      messages: templateMessages(messages),
      tools: chat.tools ?? null,
      documents: null,
      add_generation_prompt: chat.addGenerationPrompt ?? true,
    });
  } catch (error) {
    if (error instanceof ChatTemplateError) throw error;
    throw new ChatTemplateError(`The chat template failed to render: ${(error as Error).message}`, { cause: error });
  }
}
