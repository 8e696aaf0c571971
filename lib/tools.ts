/**
 * Tool calling in OpenAI's shapes (camelCase): tools reach the model through its own chat template
 * (the `tools` variable, as transformers' `apply_chat_template` passes them), and calls are written
 * in the syntax that template teaches, detected from it:
 *
 * - `hermes` (Qwen2.5/Qwen3, Hermes, SmolLM3): `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`
 * - `llama3` (Llama 3.1/3.2): `{"name": …, "parameters": {…}}` as the whole answer
 * - `mistral` (Mistral Nemo and v3 templates): `[TOOL_CALLS][{"name": …, "arguments": {…}}, …]`
 *
 * With `toolChoice` "required" or a named tool, the call is constrained from the first token by the
 * JSON-schema automaton (name among the tools, arguments valid against the tool's `parameters`).
 * With "auto" the model may answer in text or call; its text is parsed for calls afterwards.
 */
import { randomBytes } from "node:crypto";
import { InvalidOptionError } from "./errors.js";
import type { JsonSchema } from "./json-schema/validate.js";
import { compileJsonSchema, framedSchema, type CompiledJsonSchema } from "./json-schema/schema.js";

/** A function the model may call (OpenAI's `tools` entry). */
export interface ChatTool {
  type: "function";
  function: { name: string; description?: string; parameters?: JsonSchema; strict?: boolean };
}

/** Whether and which tool to call: "auto" (the model decides), "none", "required" (some tool), or one named tool. Defaults to "auto". */
export type ToolChoice = "auto" | "none" | "required" | { type: "function"; function: { name: string } };

/** A call the model made; `arguments` is JSON text, as OpenAI gives it. */
export interface ToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

/** The syntax of calls; see the module comment. */
export type ToolCallFormat = "hermes" | "llama3" | "mistral";
export const TOOL_CALL_FORMATS: readonly ToolCallFormat[] = ["hermes", "llama3", "mistral"];

/** Checked tool options of one chat request. */
export interface ToolSetup {
  tools: ChatTool[];
  choice: ToolChoice;
  parallel: boolean;
  format: ToolCallFormat | undefined;
}

const NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/** Checks `tools`, `toolChoice`, `parallelToolCalls` and `toolCallFormat`. @throws InvalidOptionError */
export function checkTools(tools: unknown, choice: unknown, parallel: unknown, format: unknown): ToolSetup | undefined {
  if (tools === undefined) {
    if (choice !== undefined && choice !== "none" && choice !== "auto") throw new InvalidOptionError("toolChoice", "no toolChoice without tools", choice);
    return undefined;
  }
  if (!Array.isArray(tools)) throw new InvalidOptionError("tools", 'an array of { type: "function", function: { name, description?, parameters? } }', tools);
  tools.forEach((t, i) => {
    const fn = (t as ChatTool | null)?.function;
    if ((t as ChatTool | null)?.type !== "function" || typeof fn !== "object" || fn === null || typeof fn.name !== "string" || !NAME.test(fn.name)) {
      throw new InvalidOptionError(`tools[${i}]`, '{ type: "function", function: { name } } with a name of letters, digits, _ . - (at most 64)', t);
    }
    if (fn.parameters !== undefined && (typeof fn.parameters !== "object" || fn.parameters === null)) {
      throw new InvalidOptionError(`tools[${i}].function.parameters`, "a JSON Schema object", fn.parameters);
    }
  });
  const names = (tools as ChatTool[]).map((t) => t.function.name);
  if (new Set(names).size !== names.length) throw new InvalidOptionError("tools", "distinct function names", names);
  const resolved = choice ?? "auto";
  const named = typeof resolved === "object" && resolved !== null ? (resolved as { function?: { name?: unknown } }).function?.name : undefined;
  if (!["auto", "none", "required"].includes(resolved as string) && !(typeof named === "string" && names.includes(named))) {
    throw new InvalidOptionError("toolChoice", `"auto", "none", "required" or { type: "function", function: { name } } naming one of ${names.join(", ")}`, choice);
  }
  if (parallel !== undefined && typeof parallel !== "boolean") throw new InvalidOptionError("parallelToolCalls", "a boolean", parallel);
  if (format !== undefined && !TOOL_CALL_FORMATS.includes(format as ToolCallFormat)) throw new InvalidOptionError("toolCallFormat", TOOL_CALL_FORMATS.join(", "), format);
  return { tools: tools as ChatTool[], choice: resolved as ToolChoice, parallel: parallel !== false, format: format as ToolCallFormat | undefined };
}

/** The call syntax a chat template teaches, or undefined when it shows no tool calls. */
export function detectToolCallFormat(template: string): ToolCallFormat | undefined {
  if (template.includes("<tool_call>")) return "hermes";
  if (template.includes("[TOOL_CALLS]")) return "mistral";
  if (template.includes("<|python_tag|>") || template.includes('"parameters": ')) return "llama3";
  return undefined;
}

const argumentsKey = (format: ToolCallFormat): string => (format === "llama3" ? "parameters" : "arguments");

/**
 * The constraint of tool calls: the call syntax around a JSON document whose name is one of the
 * tools and whose arguments follow that tool's `parameters`. Forced calls ("required", a named
 * tool) are constrained from the first token; "auto" gives a lazy constraint that starts when the
 * model writes the call marker (hermes `<tool_call>`, mistral `[TOOL_CALLS]` as text), or
 * undefined where the syntax has no marker (llama3: its calls are parsed afterwards).
 * @throws InvalidOptionError naming the tool whose parameters cannot be enforced.
 */
export function toolCallConstraint(setup: ToolSetup, format: ToolCallFormat): CompiledJsonSchema | undefined {
  const lazy = setup.choice === "auto";
  const choice = setup.choice;
  const chosen = typeof choice === "object" ? setup.tools.filter((t) => t.function.name === choice.function.name) : setup.tools;
  const call = (t: ChatTool) => ({
    type: "object",
    properties: { name: { const: t.function.name }, [argumentsKey(format)]: t.function.parameters ?? { type: "object" } },
    required: ["name", argumentsKey(format)],
    additionalProperties: false,
  });
  setup.tools.forEach((t, i) => {
    if (!chosen.includes(t)) return;
    try {
      compileJsonSchema(t.function.parameters ?? { type: "object" });
    } catch (error) {
      const e = new InvalidOptionError(`tools[${i}].function.parameters`, "a schema mlx-node can enforce", t.function.parameters);
      e.message = `Invalid option "tools[${i}].function.parameters": ${(error as Error).message.replace(/^Invalid option "jsonSchema": /, "")}`;
      throw e;
    }
  });
  const one = chosen.length === 1 ? call(chosen[0]) : { anyOf: chosen.map(call) };
  switch (format) {
    case "hermes":
      return lazy ? framedSchema(compileJsonSchema(one), "\n", "\n</tool_call>", "<tool_call>") : framedSchema(compileJsonSchema(one), "<tool_call>\n", "\n</tool_call>");
    case "llama3":
      return lazy ? undefined : compileJsonSchema(one);
    case "mistral": {
      const calls = compileJsonSchema({ type: "array", items: one, minItems: 1, ...(setup.parallel ? {} : { maxItems: 1 }) });
      return lazy ? framedSchema(calls, "", "", "[TOOL_CALLS]") : framedSchema(calls, "[TOOL_CALLS]", "");
    }
  }
}

/** An id for a call: 9 letters and digits (Mistral's templates insist on exactly that). */
export function newToolCallId(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  return Array.from(randomBytes(9), (b) => alphabet[b % alphabet.length]).join("");
}

/**
 * The calls in a model's answer, and the text before them; undefined when the answer holds no
 * call of a known tool (it is then plain content).
 */
export function parseToolCalls(text: string, format: ToolCallFormat, tools: ChatTool[]): { content: string; calls: ToolCall[] } | undefined {
  const known = new Set(tools.map((t) => t.function.name));
  const toCall = (v: unknown): ToolCall | undefined => {
    const o = v as { name?: unknown; arguments?: unknown; parameters?: unknown } | null;
    const args = o?.[argumentsKey(format) as "arguments"] ?? o?.arguments ?? o?.parameters;
    if (typeof o?.name !== "string" || !known.has(o.name) || typeof args !== "object" || args === null) return undefined;
    return { id: newToolCallId(), type: "function", function: { name: o.name, arguments: JSON.stringify(args) } };
  };
  const parse = (json: string): unknown => {
    try {
      return JSON.parse(json);
    } catch {
      return undefined;
    }
  };
  let content: string;
  let values: unknown[];
  if (format === "hermes") {
    const at = text.indexOf("<tool_call>");
    if (at < 0) return undefined;
    content = text.slice(0, at);
    values = [...text.slice(at).matchAll(/<tool_call>\s*([\s\S]*?)\s*<\/tool_call>/g)].map((m) => parse(m[1]));
  } else if (format === "mistral") {
    const at = text.indexOf("[TOOL_CALLS]");
    const body = at >= 0 ? text.slice(at + "[TOOL_CALLS]".length) : text.trimStart().startsWith("[{") ? text : undefined;
    if (body === undefined) return undefined;
    content = at >= 0 ? text.slice(0, at) : "";
    const list = parse(body.trim());
    values = Array.isArray(list) ? list : [undefined];
  } else {
    const body = text.replace(/^\s*(<\|python_tag\|>)?/, "").trim();
    if (!body.startsWith("{")) return undefined;
    content = "";
    values = [parse(body)];
  }
  const calls = values.map(toCall);
  if (calls.length === 0 || calls.some((c) => c === undefined)) return undefined;
  return { content: content.trim(), calls: calls as ToolCall[] };
}

/** A piece of a streamed answer: content text, or part of tool call `index`. */
export type ToolStreamDelta =
  | { content: string }
  | { index: number; id?: string; name?: string; arguments: string };

/** End of the JSON value starting at `from` (index after it), or -1 while it is incomplete. */
function valueEnd(text: string, from: number): number {
  let depth = 0;
  let inString = false;
  for (let i = from; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') {
        inString = false;
        if (depth === 0) return i + 1;
      }
    } else if (c === '"') inString = true;
    else if (c === "{" || c === "[") depth++;
    else if (c === "}" || c === "]") {
      depth--;
      if (depth === 0) return i + 1;
    } else if (depth === 0 && /[,\s}\]]/.test(c) && i > from) return i; // a bare scalar ended
  }
  return -1;
}

/**
 * Splits a streamed answer into content and tool-call deltas as the text arrives: content until a
 * call starts (text that may be the start of the call marker is held back), then for each call
 * its id and name once the name is written, and its arguments text piece by piece.
 */
export class ToolCallStreamer {
  private text = "";
  /** Content characters already sent. */
  private sentContent = 0;
  /** Where calls begin in `text` (-1: not yet). */
  private callsStart = -1;
  private calls: { id: string; name?: string; argsStart: number; sentArgs: number; done: boolean; from: number }[] = [];

  constructor(private readonly format: ToolCallFormat) {}

  /** Deltas for the new text. */
  push(chunk: string): ToolStreamDelta[] {
    this.text += chunk;
    const out: ToolStreamDelta[] = [];
    if (this.callsStart < 0) {
      const marker = this.format === "hermes" ? "<tool_call>" : this.format === "mistral" ? "[TOOL_CALLS]" : undefined;
      let at: number;
      let hold = 0;
      if (marker) {
        at = this.text.indexOf(marker);
        if (at < 0) for (let k = Math.min(marker.length - 1, this.text.length); k > 0; k--) if (marker.startsWith(this.text.slice(-k))) { hold = k; break; }
        if (at < 0 && this.format === "mistral" && this.text.trimStart().startsWith("[{")) at = this.text.indexOf("[");
      } else {
        // llama3: a call is the whole answer, a JSON object (after an optional <|python_tag|>).
        const head = this.text.replace(/^\s*(<\|python_tag\|>)?\s*/, "");
        at = head.startsWith("{") ? this.text.length - head.length : -1;
        if (at < 0 && (head.length === 0 || "<|python_tag|>".startsWith(head))) hold = this.text.length;
      }
      const contentEnd = at >= 0 ? at : this.text.length - hold;
      if (contentEnd > this.sentContent) out.push({ content: this.text.slice(this.sentContent, contentEnd) });
      this.sentContent = Math.max(this.sentContent, contentEnd);
      if (at < 0) return out;
      this.callsStart = at;
    }
    this.scanCalls(out);
    return out;
  }

  /** Whether any call has started. */
  get calling(): boolean {
    return this.callsStart >= 0;
  }

  private scanCalls(out: ToolStreamDelta[]): void {
    for (;;) {
      let call = this.calls.at(-1);
      if (!call || call.done) {
        const from = call ? call.argsStart : this.callsStart;
        const next = this.format === "hermes" ? this.text.indexOf("<tool_call>", from) : this.text.indexOf("{", from);
        if (next < 0 || (call && this.format === "llama3")) return;
        call = { id: newToolCallId(), argsStart: -1, sentArgs: 0, done: false, from: next };
        this.calls.push(call);
      }
      const index = this.calls.length - 1;
      const region = this.text.slice(call.from);
      if (call.name === undefined) {
        const m = /"name"\s*:\s*"((?:[^"\\]|\\.)*)"/.exec(region);
        if (!m) return;
        call.name = JSON.parse(`"${m[1]}"`) as string;
        out.push({ index, id: call.id, name: call.name, arguments: "" });
      }
      if (call.argsStart < 0) {
        const m = /"(?:arguments|parameters)"\s*:\s*(?=\S)/.exec(region);
        if (!m) return;
        call.argsStart = call.from + m.index + m[0].length;
      }
      const end = valueEnd(this.text, call.argsStart);
      const upTo = end < 0 ? this.text.length : end;
      const piece = this.text.slice(call.argsStart + call.sentArgs, upTo);
      if (piece) out.push({ index, arguments: piece });
      call.sentArgs = upTo - call.argsStart;
      if (end < 0) return;
      call.done = true;
      call.argsStart = end; // where the next call is searched from
    }
  }
}
