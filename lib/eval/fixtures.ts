/**
 * Eval fixtures: a JSON file of cases (a prompt or chat messages, generation options, and what the
 * output must and must not contain). Loading validates everything up front, so a typo fails with
 * an error naming the file and the case before a model is loaded, instead of silently passing.
 */
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import type { GenerateOptions } from "../backend.js";
import { checkMessages, splitChatOptions, type ChatMessage, type ChatOptions } from "../chat.js";
import { resolveGenerateOptions } from "../options.js";
import { checkSchema, type JsonSchema } from "../json-schema/validate.js";

/** A regular expression: its source, or `{ pattern, flags }` (for example `flags: "i"`). */
export type Pattern = string | { pattern: string; flags?: string };

/** Options a case may set: generation options, plus the template options for messages cases. */
export type CaseOptions = Omit<GenerateOptions, "signal"> &
  Pick<ChatOptions, "chatTemplate" | "addGenerationPrompt" | "templateVariables">;

/** One case of a fixtures file. Exactly one of `prompt` and `messages` is given. */
export interface EvalCase {
  /** Unique within the file; names the case in reports and errors. */
  name: string;
  description?: string;
  /** Completed with `model.generate`. */
  prompt?: string;
  /** Answered with `model.chat`. */
  messages?: ChatMessage[];
  /** Merged over the file's `defaults`. */
  options?: CaseOptions;
  /** Every pattern must match the output. */
  expect?: Pattern[];
  /** No pattern may match the output (the file's `forbid` applies too). */
  forbid?: Pattern[];
  /** The output, trimmed, must parse as JSON and validate against this schema (ajv; see lib/json-schema/validate.ts). */
  jsonSchema?: JsonSchema;
  /** Runs of the case; every run must pass. Defaults to 1. */
  repeat?: number;
  /** All runs must give the same text (for seeded sampling). Implies at least 2 runs. */
  deterministic?: boolean;
}

/** The contents of a fixtures file. */
export interface EvalFixtures {
  description?: string;
  /** Options applied to every case (chat options only reach messages cases). */
  defaults?: CaseOptions;
  /** Jinja template for messages cases, instead of the model's own (a case's `options.chatTemplate` wins). */
  chatTemplate?: string;
  /** Patterns forbidden in the output of every case. */
  forbid?: Pattern[];
  cases: EvalCase[];
}

/** A pattern compiled, with its source kept for reports. */
export interface CompiledPattern {
  source: string;
  regex: RegExp;
}

/** A case ready to run: options merged, patterns compiled, the run count resolved. */
export interface ResolvedCase {
  name: string;
  kind: "prompt" | "messages";
  prompt?: string;
  messages?: ChatMessage[];
  /** Generation options (for `generate`) or chat options (for `chat`) after merging. */
  options: CaseOptions;
  expect: CompiledPattern[];
  forbid: CompiledPattern[];
  jsonSchema?: JsonSchema;
  runs: number;
  deterministic: boolean;
}

/** A loaded fixtures file. */
export interface LoadedFixtures {
  /** Absolute path of the file. */
  path: string;
  description?: string;
  cases: ResolvedCase[];
}

/** A fixtures file cannot be read or is invalid. The message names the file and, when relevant, the case. */
export class FixtureError extends Error {
  readonly file: string;
  readonly caseName: string | undefined;
  constructor(file: string, message: string, caseName?: string) {
    super(`Fixtures file ${file}: ${message}`);
    this.name = "FixtureError";
    this.file = file;
    this.caseName = caseName;
  }
}

const TOP_KEYS = new Set(["$schema", "description", "defaults", "chatTemplate", "forbid", "cases"]);
const CASE_KEYS = new Set(["name", "description", "prompt", "messages", "options", "expect", "forbid", "jsonSchema", "repeat", "deterministic"]);
const CHAT_KEYS = ["chatTemplate", "addGenerationPrompt", "templateVariables"] as const;

/** Reads and validates a fixtures file. @throws FixtureError */
export async function loadFixtures(file: string): Promise<LoadedFixtures> {
  const path = resolve(file);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new FixtureError(path, code === "ENOENT" ? "file not found" : `cannot be read (${(error as Error).message})`);
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new FixtureError(path, `not valid JSON: ${(error as Error).message}${lineOf(text, error as Error)}`);
  }
  return parseFixtures(data, path);
}

/** Validates already-parsed fixtures; `path` is used in error messages. @throws FixtureError */
export function parseFixtures(data: unknown, path: string): LoadedFixtures {
  const fail = (message: string, caseName?: string): never => {
    throw new FixtureError(path, message, caseName);
  };
  if (!isObject(data)) return fail("the top level must be an object with a \"cases\" array");
  const unknown = Object.keys(data).filter((k) => !TOP_KEYS.has(k));
  if (unknown.length > 0) fail(`unknown top-level key "${unknown[0]}" (allowed: ${[...TOP_KEYS].join(", ")})`);
  const top = data as Partial<EvalFixtures>;
  if (!Array.isArray(top.cases) || top.cases.length === 0) fail("\"cases\" must be a non-empty array");
  if (top.description !== undefined && typeof top.description !== "string") fail("\"description\" must be a string");
  if (top.chatTemplate !== undefined && (typeof top.chatTemplate !== "string" || top.chatTemplate === "")) {
    fail("\"chatTemplate\" must be a non-empty Jinja template string");
  }
  const defaults = checkOptions(top.defaults, "defaults", true, fail);
  const globalForbid = compilePatterns(top.forbid, "forbid", fail);
  const names = new Set<string>();
  const cases = top.cases!.map((raw, index) => {
    const label = isObject(raw) && typeof raw.name === "string" && raw.name ? `case #${index + 1} "${raw.name}"` : `case #${index + 1}`;
    const failCase = (message: string): never => fail(`${label}: ${message}`, isObject(raw) ? String(raw.name ?? "") : undefined);
    if (!isObject(raw)) return failCase("must be an object");
    const bad = Object.keys(raw).find((k) => !CASE_KEYS.has(k));
    if (bad) failCase(`unknown key "${bad}" (allowed: ${[...CASE_KEYS].join(", ")})`);
    const c = raw as Partial<EvalCase>;
    if (typeof c.name !== "string" || c.name.trim() === "") failCase("needs a non-empty \"name\"");
    if (names.has(c.name!)) failCase("duplicate name (case names must be unique)");
    names.add(c.name!);
    const hasPrompt = c.prompt !== undefined;
    const hasMessages = c.messages !== undefined;
    if (hasPrompt === hasMessages) failCase("needs exactly one of \"prompt\" or \"messages\"");
    if (hasPrompt && (typeof c.prompt !== "string" || c.prompt === "")) failCase("\"prompt\" must be a non-empty string");
    if (hasMessages) attempt(() => checkMessages(c.messages), failCase);
    const kind = hasPrompt ? "prompt" : "messages";
    const own = checkOptions(c.options, "options", kind === "messages", failCase);
    const options: CaseOptions = { ...defaults, ...own };
    if (kind === "prompt") for (const key of CHAT_KEYS) delete options[key];
    else if (top.chatTemplate !== undefined && own.chatTemplate === undefined) options.chatTemplate = top.chatTemplate;
    if (c.jsonSchema !== undefined) {
      const problems = checkSchema(c.jsonSchema);
      if (problems.length > 0) failCase(`"jsonSchema" is not a valid JSON Schema: ${problems.join("; ")}`);
    }
    if (c.repeat !== undefined && (!Number.isInteger(c.repeat) || c.repeat < 1 || c.repeat > 100)) {
      failCase("\"repeat\" must be an integer from 1 to 100");
    }
    if (c.deterministic !== undefined && typeof c.deterministic !== "boolean") failCase("\"deterministic\" must be a boolean");
    const resolved: ResolvedCase = {
      name: c.name!,
      kind,
      options,
      expect: compilePatterns(c.expect, "expect", failCase),
      forbid: [...compilePatterns(c.forbid, "forbid", failCase), ...globalForbid],
      runs: Math.max(c.repeat ?? 1, c.deterministic ? 2 : 1),
      deterministic: c.deterministic ?? false,
    };
    if (kind === "prompt") resolved.prompt = c.prompt;
    else resolved.messages = c.messages;
    if (c.jsonSchema !== undefined) resolved.jsonSchema = c.jsonSchema;
    return resolved;
  });
  return { path, ...(top.description !== undefined ? { description: top.description } : {}), cases };
}

/** Renders a pattern as it appears in reports: `/source/flags`. */
export function patternLabel(p: CompiledPattern): string {
  return `/${p.source}/${p.regex.flags}`;
}

function checkOptions(value: unknown, where: string, allowChat: boolean, fail: (m: string) => never): CaseOptions {
  if (value === undefined) return {};
  if (!isObject(value)) return fail(`"${where}" must be an object`);
  if ("signal" in value) fail(`"${where}": "signal" cannot be set in a fixtures file`);
  if (!allowChat) {
    const chatKey = CHAT_KEYS.find((k) => k in value);
    if (chatKey) fail(`"${where}": "${chatKey}" only applies to messages cases`);
  }
  attempt(() => resolveGenerateOptions(splitChatOptions(value as ChatOptions).generate), (m) => fail(`"${where}": ${m}`));
  return value as CaseOptions;
}

function compilePatterns(value: unknown, where: string, fail: (m: string) => never): CompiledPattern[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) return fail(`"${where}" must be an array of regular expressions`);
  return value.map((p: unknown, i) => {
    const spec = typeof p === "string" ? { pattern: p } : p;
    if (!isObject(spec) || typeof spec.pattern !== "string" || (spec.flags !== undefined && typeof spec.flags !== "string")) {
      return fail(`${where}[${i}] must be a regex string or { "pattern": string, "flags"?: string }`);
    }
    try {
      // No `g`/`y`: a stateful lastIndex would make repeated tests of the same regex disagree.
      if (/[gy]/.test(String(spec.flags ?? ""))) throw new Error("flags g and y are not allowed");
      return { source: spec.pattern, regex: new RegExp(spec.pattern, spec.flags as string | undefined) };
    } catch (error) {
      return fail(`${where}[${i}] ${JSON.stringify(spec.pattern)} is not a valid regular expression: ${(error as Error).message}`);
    }
  });
}

function attempt(check: () => unknown, fail: (m: string) => never): void {
  try {
    check();
  } catch (error) {
    fail((error as Error).message);
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Turns JSON.parse's "at position N" into a line and column people can find. */
function lineOf(text: string, error: Error): string {
  const match = /position (\d+)/.exec(error.message);
  if (!match) return "";
  const before = text.slice(0, Number(match[1]));
  const line = before.split("\n").length;
  return ` (line ${line}, column ${before.length - before.lastIndexOf("\n")})`;
}
