/**
 * Chat prompts: messages rendered with the model's own Jinja chat template (@huggingface/jinja),
 * as Hugging Face's `apply_chat_template` does, ready to be tokenized without extra special tokens.
 */
import { Environment, Template } from "@huggingface/jinja";
import type { GenerateOptions, GenerateResult } from "./backend.js";
import { InvalidOptionError, MlxNodeError } from "./errors.js";

/** One message of a conversation. */
export interface ChatMessage {
  role: "system" | "user" | "assistant" | (string & {});
  content: string;
}

/** Options for `chat` and `chatStream`: generation options plus template control. */
export interface ChatOptions extends GenerateOptions {
  /** A Jinja chat template to use instead of the model's own (required when the model has none). */
  chatTemplate?: string;
  /** End the prompt with the template's assistant header so the model answers. Defaults to true. */
  addGenerationPrompt?: boolean;
  /** Extra variables for the template (for example `enable_thinking: false` for Qwen3). Defaults to none. */
  templateVariables?: Record<string, unknown>;
  /**
   * Tools the model may call, as JSON schemas (`{ type: "function", function: { name, description, parameters } }`),
   * given to the template as `tools` the way transformers' `apply_chat_template` does; templates
   * without tool support ignore them. Defaults to none (`tools` is null in the template).
   */
  tools?: readonly object[];
}

/** The result of `chat`: a generation result plus the answer as an assistant message. */
export interface ChatResult extends GenerateResult {
  message: { role: "assistant"; content: string };
}

/** What a backend knows about its model's chat formatting. */
export interface ChatTemplateSource {
  template: string | undefined;
  bosToken?: string;
  eosToken?: string;
  /** Where the template came from, for error messages (a file or GGUF metadata). */
  origin: string;
}

/** The chat template could not be used: missing, or it failed to render. */
export class ChatTemplateError extends MlxNodeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("CHAT_TEMPLATE_ERROR", message, options);
  }
}

const CHAT_KEYS = ["chatTemplate", "addGenerationPrompt", "templateVariables", "tools"] as const;

/** The template options of {@link ChatOptions}. */
export type ChatTemplateOptions = Pick<ChatOptions, (typeof CHAT_KEYS)[number]>;

/** Splits chat options into template options and the generation options left over. */
export function splitChatOptions(options: ChatOptions = {}): {
  chat: ChatTemplateOptions;
  generate: GenerateOptions;
} {
  if (typeof options !== "object" || options === null) throw new InvalidOptionError("options", "an object", options);
  const { chatTemplate, addGenerationPrompt, templateVariables, tools, ...generate } = options;
  if (chatTemplate !== undefined && (typeof chatTemplate !== "string" || chatTemplate.length === 0)) {
    throw new InvalidOptionError("chatTemplate", "a non-empty Jinja template string", chatTemplate);
  }
  if (addGenerationPrompt !== undefined && typeof addGenerationPrompt !== "boolean") {
    throw new InvalidOptionError("addGenerationPrompt", "a boolean", addGenerationPrompt);
  }
  if (templateVariables !== undefined && (typeof templateVariables !== "object" || templateVariables === null)) {
    throw new InvalidOptionError("templateVariables", "an object", templateVariables);
  }
  if (tools !== undefined && (!Array.isArray(tools) || tools.some((t) => typeof t !== "object" || t === null || Array.isArray(t)))) {
    throw new InvalidOptionError("tools", "an array of tool schema objects", tools);
  }
  return { chat: { chatTemplate, addGenerationPrompt, templateVariables, tools }, generate };
}

/** Checks the messages argument. */
export function checkMessages(messages: unknown): ChatMessage[] {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new InvalidOptionError("messages", "a non-empty array of { role, content }", messages);
  }
  messages.forEach((m, i) => {
    if (typeof m !== "object" || m === null || typeof m.role !== "string" || typeof m.content !== "string") {
      throw new InvalidOptionError(`messages[${i}]`, "an object with string role and content", m);
    }
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
      messages,
      tools: chat.tools ?? null,
      documents: null,
      add_generation_prompt: chat.addGenerationPrompt ?? true,
    });
  } catch (error) {
    if (error instanceof ChatTemplateError) throw error;
    throw new ChatTemplateError(`The chat template failed to render: ${(error as Error).message}`, { cause: error });
  }
}
