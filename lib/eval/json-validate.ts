/**
 * A small, dependency-free JSON Schema validator for the subset mlx-node supports: `type` (object,
 * array, string, number, integer, boolean), `enum`, `properties`, `required`, `additionalProperties`
 * (boolean) and `items`, nested to any depth. Annotations (`title`, `description`, `$schema`, `$id`,
 * `default`, `examples`) are ignored.
 *
 * The subset is deliberately closed: {@link checkSchema} rejects any other keyword instead of ignoring
 * it, so a schema never looks enforced when it is not. Guaranteed-JSON decoding shares this module,
 * and it must be able to turn every accepted schema into a grammar.
 */

/** The JSON types a schema's `type` may name. */
export type JsonSchemaType = "object" | "array" | "string" | "number" | "integer" | "boolean";

/** A JSON value allowed in `enum`. Only primitives: they compare by value. */
export type JsonPrimitive = string | number | boolean | null;

/** A schema in the supported subset. */
export interface JsonSchema {
  type?: JsonSchemaType;
  /** The value must equal one of these. */
  enum?: JsonPrimitive[];
  /** Objects: schemas of named properties. */
  properties?: Record<string, JsonSchema>;
  /** Objects: property names that must be present. */
  required?: string[];
  /** Objects: `false` rejects properties not listed in `properties`. Defaults to true. */
  additionalProperties?: boolean;
  /** Arrays: the schema of every element. */
  items?: JsonSchema;
  title?: string;
  description?: string;
}

/** One way a value breaks a schema. `path` is a JSONPath-like location such as `$.files[2].name`. */
export interface JsonValidationIssue {
  path: string;
  message: string;
}

const TYPES: readonly string[] = ["object", "array", "string", "number", "integer", "boolean"];
const KEYWORDS = new Set(["type", "enum", "properties", "required", "additionalProperties", "items"]);
const ANNOTATIONS = new Set(["title", "description", "$schema", "$id", "default", "examples"]);

/**
 * Checks that `schema` is inside the supported subset.
 * @returns the problems found, each naming where (`#/properties/name`); empty when the schema is usable.
 */
export function checkSchema(schema: unknown, at = "#"): string[] {
  if (!isPlainObject(schema)) return [`${at}: a schema must be an object`];
  const problems: string[] = [];
  for (const key of Object.keys(schema)) {
    if (!KEYWORDS.has(key) && !ANNOTATIONS.has(key)) {
      problems.push(`${at}: unsupported keyword "${key}" (supported: ${[...KEYWORDS].join(", ")})`);
    }
  }
  const { type, enum: values, properties, required, additionalProperties, items } = schema;
  if (type !== undefined && (typeof type !== "string" || !TYPES.includes(type))) {
    problems.push(`${at}/type: must be one of ${TYPES.join(", ")} (got ${JSON.stringify(type)})`);
  }
  if (values !== undefined) {
    if (!Array.isArray(values) || values.length === 0) problems.push(`${at}/enum: must be a non-empty array`);
    else if (values.some((v) => v !== null && !["string", "number", "boolean"].includes(typeof v))) {
      problems.push(`${at}/enum: only strings, numbers, booleans and null are supported`);
    }
  }
  if (properties !== undefined) {
    if (!isPlainObject(properties)) problems.push(`${at}/properties: must be an object of schemas`);
    else for (const [name, sub] of Object.entries(properties)) problems.push(...checkSchema(sub, `${at}/properties/${name}`));
  }
  if (required !== undefined && (!Array.isArray(required) || required.some((r) => typeof r !== "string"))) {
    problems.push(`${at}/required: must be an array of property names`);
  }
  if (additionalProperties !== undefined && typeof additionalProperties !== "boolean") {
    problems.push(`${at}/additionalProperties: only true or false is supported`);
  }
  if (items !== undefined) problems.push(...checkSchema(items, `${at}/items`));
  const objectOnly = properties !== undefined || required !== undefined || additionalProperties !== undefined;
  if (type !== undefined && type !== "object" && objectOnly) problems.push(`${at}: object keywords on a schema of type "${String(type)}"`);
  if (type !== undefined && type !== "array" && items !== undefined) problems.push(`${at}: "items" on a schema of type "${String(type)}"`);
  return problems;
}

/**
 * Validates a parsed JSON value against a schema of the supported subset (check it first with
 * {@link checkSchema}; unsupported keywords are not enforced here).
 * @returns every issue found, outermost first; empty when the value is valid.
 */
export function validateJson(value: unknown, schema: JsonSchema, path = "$"): JsonValidationIssue[] {
  const issues: JsonValidationIssue[] = [];
  const typeOk = schema.type === undefined || matchesType(value, schema.type);
  if (!typeOk) issues.push({ path, message: `expected ${schema.type}, got ${describeType(value)}` });
  if (schema.enum !== undefined && !schema.enum.some((v) => v === value)) {
    issues.push({ path, message: `expected one of ${schema.enum.map((v) => JSON.stringify(v)).join(", ")}, got ${preview(value)}` });
  }
  // Children are checked only when the container is the right kind, so a wrong type gives one issue, not dozens.
  if (typeOk && isPlainObject(value)) {
    for (const name of schema.required ?? []) {
      if (!Object.hasOwn(value, name)) issues.push({ path, message: `missing required property "${name}"` });
    }
    const properties = schema.properties ?? {};
    for (const [name, child] of Object.entries(value)) {
      const sub = Object.hasOwn(properties, name) ? properties[name] : undefined;
      if (sub) issues.push(...validateJson(child, sub, childPath(path, name)));
      else if (schema.additionalProperties === false) issues.push({ path, message: `unexpected property "${name}"` });
    }
  }
  if (typeOk && Array.isArray(value) && schema.items) {
    value.forEach((item, i) => issues.push(...validateJson(item, schema.items!, `${path}[${i}]`)));
  }
  return issues;
}

/** The outcome of {@link parseAndValidate}. */
export type JsonCheck =
  | { ok: true; value: unknown }
  | { ok: false; value?: unknown; issues: JsonValidationIssue[] };

/**
 * Parses `text` (surrounding whitespace allowed, nothing else) as JSON and validates it.
 * A parse failure is reported as one issue at `$`.
 */
export function parseAndValidate(text: string, schema: JsonSchema): JsonCheck {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return { ok: false, issues: [{ path: "$", message: `not valid JSON: ${(error as Error).message}` }] };
  }
  const issues = validateJson(value, schema);
  return issues.length === 0 ? { ok: true, value } : { ok: false, value, issues };
}

function matchesType(value: unknown, type: JsonSchemaType): boolean {
  switch (type) {
    case "object":
      return isPlainObject(value);
    case "array":
      return Array.isArray(value);
    case "string":
      return typeof value === "string";
    case "number":
      return typeof value === "number" && Number.isFinite(value);
    case "integer":
      return typeof value === "number" && Number.isInteger(value);
    case "boolean":
      return typeof value === "boolean";
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function describeType(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number" && Number.isFinite(value) && !Number.isInteger(value)) return `number ${value}`;
  return typeof value === "number" ? `integer ${value}` : typeof value;
}

function preview(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

function childPath(path: string, name: string): string {
  return /^[A-Za-z_$][\w$]*$/.test(name) ? `${path}.${name}` : `${path}[${JSON.stringify(name)}]`;
}
