/**
 * JSON Schema validation through ajv (draft 2020-12, or draft-07 when the schema says so) with
 * ajv-formats: what guaranteed JSON checks schemas with, what eval scores outputs with, and what
 * the tests check constrained output against.
 */
import { createRequire } from "node:module";
import type { AnySchema, ErrorObject, ValidateFunction } from "ajv";

/** A JSON Schema: an object (or `true`/`false`); mlx-node's enforceable subset is in lib/json-schema/schema.ts. */
export type JsonSchema = { [keyword: string]: unknown } | boolean;

/** One way a value breaks a schema. `path` is a JSON pointer into the value (`/files/2/name`, "" for the root). */
export interface JsonValidationIssue {
  path: string;
  message: string;
}

// ajv and ajv-formats are CommonJS; createRequire keeps their default exports typed simply.
const require = createRequire(import.meta.url);
type AjvClass = new (options: object) => { compile(schema: AnySchema): ValidateFunction; validateSchema(schema: AnySchema): boolean | Promise<unknown>; errors?: ErrorObject[] | null };
const Ajv2020 = (require("ajv/dist/2020") as { default: AjvClass }).default;
const AjvDraft7 = (require("ajv") as { default: AjvClass }).default;
const addFormats = (require("ajv-formats") as { default: (ajv: object) => void }).default;

const instances = new Map<string, InstanceType<AjvClass>>();
const compiled = new WeakMap<object, ValidateFunction>();

function ajvFor(schema: JsonSchema): InstanceType<AjvClass> {
  const draft7 = typeof schema === "object" && /draft-0[4-7]/.test(String(schema.$schema ?? ""));
  const key = draft7 ? "07" : "2020";
  let ajv = instances.get(key);
  if (!ajv) {
    // strict: false accepts OpenAPI's `discriminator` and other annotations real schemas carry
    // (ajv knows OpenAPI's `nullable`, which openai's zodResponseFormat writes).
    const Class = draft7 ? AjvDraft7 : Ajv2020;
    ajv = new Class({ strict: false, allErrors: true, validateFormats: true });
    addFormats(ajv);
    instances.set(key, ajv);
  }
  return ajv;
}

/** The compiled validator of a schema (cached per schema object). @throws Error when ajv rejects the schema. */
export function validatorFor(schema: JsonSchema): ValidateFunction {
  if (typeof schema === "boolean") return ajvFor(schema).compile(schema);
  let v = compiled.get(schema);
  if (!v) {
    v = ajvFor(schema).compile(schema);
    compiled.set(schema, v);
  }
  return v;
}

/** Problems ajv finds in the schema itself (empty when it is a valid JSON Schema). */
export function checkSchema(schema: unknown): string[] {
  if (typeof schema !== "boolean" && (typeof schema !== "object" || schema === null || Array.isArray(schema))) return ["#: a schema must be an object"];
  try {
    validatorFor(schema as JsonSchema);
    return [];
  } catch (error) {
    return [(error as Error).message];
  }
}

/** Validates a parsed JSON value. @returns every issue ajv reports; empty when the value is valid. */
export function validateJson(value: unknown, schema: JsonSchema): JsonValidationIssue[] {
  const validate = validatorFor(schema);
  if (validate(value)) return [];
  return (validate.errors ?? []).map((e) => ({ path: e.instancePath, message: `${e.message ?? "invalid"}${e.params && "allowedValues" in e.params ? ` (${JSON.stringify(e.params.allowedValues)})` : ""}` }));
}

/** The outcome of {@link parseAndValidate}. */
export type JsonCheck =
  | { ok: true; value: unknown }
  | { ok: false; value?: unknown; issues: JsonValidationIssue[] };

/**
 * Parses `text` (surrounding whitespace allowed, nothing else) as JSON and validates it.
 * A parse failure is reported as one issue at the root.
 */
export function parseAndValidate(text: string, schema: JsonSchema): JsonCheck {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return { ok: false, issues: [{ path: "", message: `not valid JSON: ${(error as Error).message}` }] };
  }
  const issues = validateJson(value, schema);
  return issues.length === 0 ? { ok: true, value } : { ok: false, value, issues };
}
