/**
 * Compiles a `jsonSchema` option into the graph of nodes that constrained decoding walks
 * (frames.ts). What is generated is always a subset of what the schema allows:
 *
 * - objects write their declared properties in declared order, each at most once, every
 *   `required` one present; extra properties only where `additionalProperties` is a schema (or
 *   the object declares none), after the declared ones;
 * - strings with `pattern` or `format` are ASCII; numbers have at most 15 integer and 15
 *   fraction digits (bounded numbers: no exponent); integers have neither;
 * - `$ref` recursion, and values with no constraint at all, nest at most {@link MAX_NESTING}
 *   levels (the deeper branch is not offered: an optional property is left out, an array ends);
 * - `anyOf` and type arrays may overlap; `oneOf` alternatives must be told apart (different JSON
 *   types, or a required property with different constant values), since a document matching
 *   two would be invalid.
 *
 * Output is compact JSON: whitespace only as one optional space at the start, after `:` and `,`.
 * Sizes are bounded (see {@link SCHEMA_LIMITS}) so that compiling cannot stall the process.
 */
import { InvalidOptionError } from "../errors.js";
import { validatorFor, type JsonSchema } from "./validate.js";
import { FORMATS } from "./formats.js";
import {
  arrayFinish, buildTrie, objectFinish, stringRest,
  type ArrayNode, type CompiledJsonSchema, type LiteralNode, type NumberNode, type ObjectNode, type PropertyNode, type SchemaNode, type StringNode, type UnionNode,
} from "./nodes.js";
import { numberBounds, boundedCost } from "./numbers.js";
import { compileAnchored, compilePattern, intersectDfas, PatternError, type Dfa } from "./regex.js";

export type { JsonSchema } from "./validate.js";
export * from "./nodes.js";
export { MAX_EXPONENT_DIGITS, MAX_FRACTION_DIGITS, MAX_INT_DIGITS } from "./numbers.js";

/** How deep `$ref` recursion and unconstrained values (`{}`, `json_object`) nest. */
export const MAX_NESTING = 8;

/** Bounds on what is compiled; past them the schema is refused with InvalidOptionError. */
export const SCHEMA_LIMITS = {
  /** Characters of the schema's JSON text. */
  schemaChars: 256 * 1024,
  /** Values of all `enum`/`const` keywords together. */
  enumValues: 4096,
  /** Nodes after `$ref` expansion. */
  nodes: 20_000,
};

type Obj = Record<string, unknown>;

const encoder = new TextEncoder();
const KEYWORDS = [
  "type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions",
  "properties", "required", "additionalProperties", "minProperties", "maxProperties",
  "minLength", "maxLength", "pattern", "format",
  "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
  "items", "prefixItems", "additionalItems", "minItems", "maxItems", "nullable", "propertyNames",
];
const KNOWN = new Set(KEYWORDS);
/** Accepted and ignored (`discriminator` is OpenAPI's, as Pydantic writes it next to `oneOf`). */
const ANNOTATIONS = new Set(["title", "description", "default", "examples", "$schema", "$id", "$comment", "discriminator", "readOnly", "writeOnly", "deprecated"]);
const TYPES = ["object", "array", "string", "number", "integer", "boolean", "null"];

/** The compile error for a schema problem: InvalidOptionError naming where (`#/properties/x`) and why. */
export function schemaError(problem: string, option = "jsonSchema"): InvalidOptionError {
  const error = new InvalidOptionError(option, "a schema mlx-node can enforce", problem);
  error.message = `Invalid option "${option}": ${problem}`;
  return error;
}

const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const pointerPart = (s: string): string => s.replace(/~/g, "~0").replace(/\//g, "~1");

/**
 * Checks and compiles a schema.
 * @throws InvalidOptionError (option `jsonSchema`) naming where and why, e.g. an unsupported keyword.
 */
export function compileJsonSchema(schema: unknown): CompiledJsonSchema {
  const key = schemaKey(schema);
  const cached = cachedCompiled(key);
  if (cached) return cached.schema === schema ? cached : { ...cached, schema: schema as JsonSchema };
  const root = new Compiler(schema as JsonSchema).compile(schema, "#");
  if (root.minLength === Infinity) throw schemaError("#: no document satisfies this schema within mlx-node's limits (see MAX_NESTING)");
  return cacheCompiled({ schema: schema as JsonSchema, root, key, minTokens: root.minLength });
}

/** The schema's JSON text (its cache key), after the shape and size checks. @throws InvalidOptionError */
export function schemaKey(schema: unknown): string {
  if (schema !== true && !isObj(schema)) throw schemaError("#: a schema must be an object");
  const key = JSON.stringify(schema);
  if (key.length > SCHEMA_LIMITS.schemaChars) {
    throw schemaError(`#: the schema is ${key.length} characters of JSON; at most ${SCHEMA_LIMITS.schemaChars} are compiled`);
  }
  return key;
}

/** Recently compiled schemas by JSON text (most recent last). */
const compiledCache = new Map<string, CompiledJsonSchema>();

export function cachedCompiled(key: string): CompiledJsonSchema | undefined {
  const hit = compiledCache.get(key);
  if (hit) {
    compiledCache.delete(key);
    compiledCache.set(key, hit);
  }
  return hit;
}

export function cacheCompiled(compiled: CompiledJsonSchema): CompiledJsonSchema {
  compiledCache.set(compiled.key, compiled);
  if (compiledCache.size > 32) compiledCache.delete(compiledCache.keys().next().value as string);
  return compiled;
}

/** The fewest `maxTokens` a schema needs (see {@link CompiledJsonSchema.minTokens}). @throws InvalidOptionError */
export function minimumMaxTokens(schema: JsonSchema): number {
  return compileJsonSchema(schema).minTokens;
}

class Compiler {
  private nextId = 0;
  private enumValues = 0;
  /** Compiled `$ref` targets by (ref, times the ref is already being expanded on this path). */
  private readonly refs = new Map<string, SchemaNode>();
  private readonly expanding: string[] = [];
  private readonly anyNodes: SchemaNode[] = [];

  constructor(private readonly root: JsonSchema) {}

  compile(s: unknown, at: string): SchemaNode {
    if (s === true) return this.anyValue(0);
    if (s === false) return this.union([]);
    if (!isObj(s)) throw schemaError(`${at}: a schema must be an object or a boolean`);
    for (const k of Object.keys(s)) {
      if (!KNOWN.has(k) && !ANNOTATIONS.has(k)) throw schemaError(`${at}: unsupported keyword "${k}"`);
    }
    const rest = withoutAnnotations(s);
    if (rest.propertyNames !== undefined) {
      // Keys are strings anyway: only the trivial form (Zod's records write it) is accepted.
      const names = rest.propertyNames;
      if (!(names === true || (isObj(names) && Object.keys(withoutAnnotations(names)).every((k) => k === "type") && (names.type === undefined || names.type === "string")))) {
        throw schemaError(`${at}/propertyNames: only {"type":"string"} is supported`);
      }
      delete rest.propertyNames;
    }
    if (rest.nullable !== undefined) {
      // OpenAPI 3.0's `nullable: true` (openai's zodResponseFormat writes it): the schema, or null.
      const { nullable, ...others } = rest;
      return nullable === true ? this.union([this.compile(others, at), this.literal(["null"])]) : this.compile(others, at);
    }
    if (rest.$ref !== undefined) {
      const { $ref, ...siblings } = rest;
      if (Object.keys(siblings).length === 0) return this.ref($ref, at);
      return this.compile({ allOf: [{ $ref }, siblings] }, at);
    }
    if (rest.allOf !== undefined) {
      const { allOf, ...siblings } = rest;
      if (!Array.isArray(allOf) || allOf.length === 0) throw schemaError(`${at}/allOf: must be a non-empty array of schemas`);
      return this.compile(this.merge([...allOf.map((m, i) => this.resolve(m, `${at}/allOf/${i}`)), siblings], `${at}/allOf`), at);
    }
    for (const word of ["anyOf", "oneOf"] as const) {
      if (rest[word] === undefined) continue;
      const { [word]: list, ...siblings } = rest;
      if (!Array.isArray(list) || list.length === 0) throw schemaError(`${at}/${word}: must be a non-empty array of schemas`);
      const constrained = Object.keys(siblings).filter((k) => k !== "$defs" && k !== "definitions").length > 0;
      const alternatives = list.map((alt, i) => {
        const where = `${at}/${word}/${i}`;
        return constrained ? this.compile(this.merge([siblings, this.resolve(alt, where)], where), where) : this.compile(alt, where);
      });
      if (word === "oneOf") checkDisjoint(alternatives, `${at}/oneOf`);
      return this.union(alternatives);
    }
    if (rest.const !== undefined || rest.enum !== undefined) return this.literalOf(rest, at);
    const type = rest.type;
    if (Array.isArray(type)) {
      if (type.length === 0) throw schemaError(`${at}/type: an empty list of types`);
      return this.union(type.map((t) => this.typed({ ...rest, type: t }, String(t), at)));
    }
    if (type === undefined) {
      const implied = impliedType(rest);
      return implied ? this.typed(rest, implied, at) : this.anyValue(0);
    }
    return this.typed(rest, String(type), at);
  }

  private node<T extends SchemaNode>(n: Omit<T, "id">): T {
    if (this.nextId >= SCHEMA_LIMITS.nodes) throw schemaError(`#: the schema expands to more than ${SCHEMA_LIMITS.nodes} nodes`);
    return { ...n, id: this.nextId++ } as T;
  }

  private union(alternatives: SchemaNode[]): SchemaNode {
    const flat = alternatives.flatMap((a) => (a.kind === "union" ? a.alternatives : [a])).filter((a) => a.minLength < Infinity);
    if (flat.length === 1) return flat[0];
    return this.node<UnionNode>({ kind: "union", alternatives: flat, minLength: Math.min(...flat.map((a) => a.minLength)) });
  }

  /** A `$ref` to this document (`#`, `#/$defs/…`, `#/definitions/…`, any JSON pointer), expanded at most MAX_NESTING deep. */
  private ref(ref: unknown, at: string): SchemaNode {
    const target = this.pointer(ref, at);
    const depth = this.expanding.filter((r) => r === ref).length;
    if (depth >= MAX_NESTING) return this.union([]);
    const memo = `${String(ref)}\u0000${depth}`;
    let node = this.refs.get(memo);
    if (!node) {
      this.expanding.push(ref as string);
      try {
        node = this.compile(target, String(ref));
      } finally {
        this.expanding.pop();
      }
      this.refs.set(memo, node);
    }
    return node;
  }

  private pointer(ref: unknown, at: string): unknown {
    if (typeof ref !== "string" || !ref.startsWith("#")) throw schemaError(`${at}/$ref: only references inside the schema ("#/$defs/Name") are supported, got ${JSON.stringify(ref)}`);
    let target: unknown = this.root;
    for (const raw of ref.slice(1).split("/").slice(1)) {
      const part = decodeURIComponent(raw).replace(/~1/g, "/").replace(/~0/g, "~");
      target = isObj(target) || Array.isArray(target) ? (target as Obj)[part] : undefined;
      if (target === undefined) throw schemaError(`${at}/$ref: ${ref} does not point into the schema`);
    }
    return target;
  }

  /** A member of allOf with its top-level `$ref` and `allOf` resolved (for merging). */
  private resolve(s: unknown, at: string, depth = 0): Obj {
    if (depth > 32) throw schemaError(`${at}: $ref/allOf chain too deep to merge`);
    if (s === true) return {};
    if (!isObj(s)) throw schemaError(`${at}: a schema must be an object`);
    let out = withoutAnnotations(s);
    if (out.$ref !== undefined) {
      const { $ref, ...siblings } = out;
      out = this.merge([this.resolve(this.pointer($ref, at), `${at}/$ref`, depth + 1), siblings], at);
    }
    if (out.allOf !== undefined) {
      const { allOf, ...siblings } = out;
      if (!Array.isArray(allOf)) throw schemaError(`${at}/allOf: must be an array of schemas`);
      out = this.merge([...allOf.map((m, i) => this.resolve(m, `${at}/allOf/${i}`, depth + 1)), siblings], at);
    }
    return out;
  }

  /** allOf: one schema with every member's constraints (what cannot be combined is refused). */
  private merge(members: Obj[], at: string): Obj {
    const out: Obj = {};
    const closed: Set<string>[] = [];
    for (const raw of members) {
      const m = this.resolve(raw, at);
      if (m.additionalProperties === false) closed.push(new Set(Object.keys(isObj(m.properties) ? m.properties : {})));
      for (const [k, v] of Object.entries(m)) {
        const old = out[k];
        if (old === undefined) out[k] = v;
        else if (k === "properties" && isObj(old) && isObj(v)) {
          const props: Obj = { ...old };
          for (const [name, sub] of Object.entries(v)) props[name] = props[name] === undefined ? sub : { allOf: [props[name], sub] };
          out[k] = props;
        } else if (k === "required" && Array.isArray(old) && Array.isArray(v)) out[k] = [...new Set([...old, ...v])];
        else if (["minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties"].includes(k) && typeof old === "number" && typeof v === "number") out[k] = Math.max(old, v);
        else if (["maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties"].includes(k) && typeof old === "number" && typeof v === "number") out[k] = Math.min(old, v);
        else if (k === "additionalProperties" && (old === false || v === false)) out[k] = false;
        else if (k === "type") out[k] = intersectTypes(old, v, at);
        else if (k === "$defs" || k === "definitions") continue;
        else if (JSON.stringify(old) !== JSON.stringify(v)) throw schemaError(`${at}: "${k}" appears in more than one allOf member with different values (not supported)`);
      }
    }
    if (closed.length > 0 && isObj(out.properties)) {
      // additionalProperties: false in a member forbids every property that member does not declare.
      const allowed = Object.keys(out.properties).filter((n) => closed.every((c) => c.has(n)));
      for (const name of Array.isArray(out.required) ? out.required : []) {
        if (!allowed.includes(name as string)) throw schemaError(`${at}: required property "${name}" is forbidden by another member's additionalProperties: false`);
      }
      out.properties = Object.fromEntries(allowed.map((n) => [n, (out.properties as Obj)[n]]));
    }
    return out;
  }

  private literalOf(s: Obj, at: string): SchemaNode {
    const given = s.const !== undefined ? [s.const] : s.enum;
    const where = s.const !== undefined ? `${at}/const` : `${at}/enum`;
    if (!Array.isArray(given) || given.length === 0) throw schemaError(`${where}: must be a non-empty array`);
    this.enumValues += given.length;
    if (this.enumValues > SCHEMA_LIMITS.enumValues) throw schemaError(`${where}: more than ${SCHEMA_LIMITS.enumValues} enum/const values in the schema`);
    // Other keywords next to enum (type, minLength…) still apply: keep the values they allow.
    const others = Object.fromEntries(Object.entries(s).filter(([k]) => !["enum", "const", "$defs", "definitions"].includes(k)));
    const check = Object.keys(others).length > 0 ? validatorFor(others) : undefined;
    const values: string[] = [];
    for (const v of given) {
      if (check && !check(v)) continue;
      const text = JSON.stringify(v);
      if (!values.includes(text)) values.push(text);
    }
    if (values.length === 0) throw schemaError(`${where}: no value satisfies the other keywords of the schema`);
    return this.literal(values);
  }

  private literal(values: string[]): LiteralNode {
    const trie = buildTrie(values.map((v) => encoder.encode(v)));
    return this.node<LiteralNode>({ kind: "literal", values, trie, minLength: trie.minRemaining[0] });
  }

  private typed(s: Obj, type: string, at: string): SchemaNode {
    switch (type) {
      case "object":
        return this.object(s, at);
      case "array":
        return this.array(s, at);
      case "string":
        return this.string(s, at);
      case "number":
      case "integer":
        return this.number(s, type === "integer", at);
      case "boolean":
        return this.literal(["true", "false"]);
      case "null":
        return this.literal(["null"]);
      default:
        throw schemaError(`${at}/type: must be one of ${TYPES.join(", ")} (got ${JSON.stringify(type)})`);
    }
  }

  /** A value with no constraint, nesting at most MAX_NESTING - depth more levels. */
  private anyValue(depth: number): SchemaNode {
    const cached = this.anyNodes[depth];
    if (cached) return cached;
    const scalars = [this.node<StringNode>({ kind: "string", minChars: 0, maxChars: Infinity, dfa: undefined, memo: new Map(), minLength: 2 }), this.number({}, false, "#"), this.literal(["true", "false", "null"])];
    const node =
      depth >= MAX_NESTING
        ? this.union(scalars)
        : this.union([this.objectNode([], this.anyValue(depth + 1), 0, Infinity, "#"), this.arrayNode([], this.anyValue(depth + 1), 0, Infinity), ...scalars]);
    this.anyNodes[depth] = node;
    return node;
  }

  private object(s: Obj, at: string): SchemaNode {
    const declared = s.properties === undefined ? {} : s.properties;
    if (!isObj(declared)) throw schemaError(`${at}/properties: must be an object of schemas`);
    const required = s.required ?? [];
    if (!Array.isArray(required) || required.some((r) => typeof r !== "string")) throw schemaError(`${at}/required: must be an array of property names`);
    const extra = s.additionalProperties;
    const properties: PropertyNode[] = Object.entries(declared).map(([name, sub]) => ({
      name,
      key: encoder.encode(JSON.stringify(name)),
      required: required.includes(name),
      node: this.compile(sub, `${at}/properties/${pointerPart(name)}`),
    }));
    for (const name of new Set(required as string[])) {
      if (properties.some((p) => p.name === name)) continue;
      if (extra === false) throw schemaError(`${at}/required: "${name}" is not in "properties" and additionalProperties is false`);
      properties.push({ name, key: encoder.encode(JSON.stringify(name)), required: true, node: isObj(extra) ? this.compile(extra, `${at}/additionalProperties`) : this.anyValue(0) });
    }
    // Extra properties: a schema always; `true`/absent only when nothing is declared (`{"type":"object"}`).
    const additional = isObj(extra) ? this.compile(extra, `${at}/additionalProperties`) : extra !== false && Object.keys(declared).length === 0 && required.length === 0 ? this.anyValue(0) : undefined;
    return this.objectNode(properties, additional, count(s.minProperties, `${at}/minProperties`, 0), count(s.maxProperties, `${at}/maxProperties`, Infinity), at);
  }

  private objectNode(properties: PropertyNode[], additional: SchemaNode | undefined, minProperties: number, maxProperties: number, at: string): SchemaNode {
    const requiredCount = properties.filter((p) => p.required).length;
    if (requiredCount > maxProperties) throw schemaError(`${at}/maxProperties: ${maxProperties} is below the ${requiredCount} required properties`);
    const keys = buildTrie(properties.map((p) => p.key));
    const extraKeyMin = properties.some((p) => p.name === "") ? 3 : 2;
    const countCap = Math.max(minProperties, maxProperties === Infinity ? 0 : maxProperties);
    const node = this.node<ObjectNode>({ kind: "object", properties, keys, additional, extraKeyMin, minProperties, maxProperties, countCap, minLength: 0 });
    node.minLength = 1 + objectFinish(node, -1, 0, true);
    return node;
  }

  private array(s: Obj, at: string): SchemaNode {
    let prefix: unknown[] = [];
    let items: unknown = s.items;
    if (Array.isArray(s.items)) {
      // draft-07 tuples: items as a list, then additionalItems.
      prefix = s.items;
      items = s.additionalItems ?? true;
    } else if (s.prefixItems !== undefined) {
      if (!Array.isArray(s.prefixItems)) throw schemaError(`${at}/prefixItems: must be an array of schemas`);
      prefix = s.prefixItems;
    }
    const prefixNodes = prefix.map((p, i) => this.compile(p, `${at}/prefixItems/${i}`));
    const itemNode = items === false ? undefined : items === undefined || items === true ? this.anyValue(0) : this.compile(items, `${at}/items`);
    return this.arrayNode(prefixNodes, itemNode, count(s.minItems, `${at}/minItems`, 0), count(s.maxItems, `${at}/maxItems`, Infinity));
  }

  private arrayNode(prefix: SchemaNode[], items: SchemaNode | undefined, minItems: number, maxItems: number): SchemaNode {
    const countCap = Math.max(minItems, prefix.length, maxItems === Infinity ? 0 : maxItems);
    const node = this.node<ArrayNode>({ kind: "array", prefix, items, minItems, maxItems, countCap, minLength: 0 });
    node.minLength = 1 + arrayFinish(node, 0, true);
    return node;
  }

  private string(s: Obj, at: string): SchemaNode {
    const minChars = count(s.minLength, `${at}/minLength`, 0);
    let maxChars = count(s.maxLength, `${at}/maxLength`, Infinity);
    let dfa: Dfa | undefined;
    if (s.format !== undefined) {
      const format = FORMATS[String(s.format)];
      if (!format) throw schemaError(`${at}/format: unsupported format ${JSON.stringify(s.format)} (supported: ${Object.keys(FORMATS).join(", ")})`);
      dfa = cachedDfa(`format:${String(s.format)}`, () => compileAnchored(format.source));
      maxChars = Math.min(maxChars, format.maxLength ?? Infinity);
    }
    if (s.pattern !== undefined) {
      if (typeof s.pattern !== "string") throw schemaError(`${at}/pattern: must be a string`);
      const source = s.pattern;
      try {
        const pattern = cachedDfa(`pattern:${source}`, () => compilePattern(source));
        dfa = dfa ? cachedDfa(`format:${String(s.format)}\u0000pattern:${source}`, () => intersectDfas(dfa!, pattern)) : pattern;
      } catch (error) {
        if (error instanceof PatternError) throw schemaError(`${at}/pattern: ${JSON.stringify(source)}: ${error.message}`);
        throw error;
      }
    }
    const node = this.node<StringNode>({ kind: "string", minChars, maxChars, dfa, memo: new Map(), minLength: 0 });
    node.minLength = 1 + stringRest(node, 0, 0);
    if (node.minLength === Infinity && dfa) throw schemaError(`${at}: no ASCII string of the allowed length matches its ${s.format !== undefined ? "format" : "pattern"}`);
    return node;
  }

  private number(s: Obj, integer: boolean, at: string): SchemaNode {
    const num = (k: string): number | undefined => {
      const v = s[k];
      if (v === undefined || typeof v === "boolean") return undefined;
      if (typeof v !== "number" || !Number.isFinite(v)) throw schemaError(`${at}/${k}: must be a finite number`);
      return v;
    };
    let multipleOf = num("multipleOf") ?? 1;
    if (multipleOf <= 0) throw schemaError(`${at}/multipleOf: must be positive`);
    if (multipleOf !== 1) {
      if (!Number.isInteger(multipleOf)) throw schemaError(`${at}/multipleOf: only integer multiples are supported`);
      integer = true; // a multiple of an integer is an integer
    }
    // exclusiveMinimum as a number (2019+) or as draft-04's boolean flag on minimum.
    let minimum = num("minimum") ?? -Infinity;
    let minimumExclusive = s.exclusiveMinimum === true;
    const exMin = num("exclusiveMinimum");
    if (exMin !== undefined && exMin >= minimum) [minimum, minimumExclusive] = [exMin, true];
    let maximum = num("maximum") ?? Infinity;
    let maximumExclusive = s.exclusiveMaximum === true;
    const exMax = num("exclusiveMaximum");
    if (exMax !== undefined && exMax <= maximum) [maximum, maximumExclusive] = [exMax, true];
    const bounded = minimum !== -Infinity || maximum !== Infinity || multipleOf !== 1;
    const bounds = bounded ? numberBounds({ minimum, minimumExclusive, maximum, maximumExclusive, multipleOf }, integer) : undefined;
    const minLength = bounds ? Math.min(boundedCost(bounds, false, 0, 0), 1 + boundedCost(bounds, true, 0, 0)) : 1;
    if (minLength === Infinity) throw schemaError(`${at}: no ${integer ? "integer" : "number"} satisfies its bounds`);
    return this.node<NumberNode>({ kind: "number", integer, bounds, minLength });
  }
}

function withoutAnnotations(s: Obj): Obj {
  return Object.fromEntries(Object.entries(s).filter(([k]) => !ANNOTATIONS.has(k)));
}

function impliedType(s: Obj): string | undefined {
  if (["properties", "required", "additionalProperties", "minProperties", "maxProperties"].some((k) => s[k] !== undefined)) return "object";
  if (["items", "prefixItems", "minItems", "maxItems"].some((k) => s[k] !== undefined)) return "array";
  if (["minLength", "maxLength", "pattern", "format"].some((k) => s[k] !== undefined)) return "string";
  if (["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"].some((k) => s[k] !== undefined)) return "number";
  return undefined;
}

function intersectTypes(a: unknown, b: unknown, at: string): unknown {
  const list = (t: unknown): string[] => (Array.isArray(t) ? t.map(String) : [String(t)]);
  let both = list(a).filter((t) => list(b).includes(t));
  if (both.length === 0 && list(a).includes("number") && list(b).includes("integer")) both = ["integer"];
  if (both.length === 0 && list(b).includes("number") && list(a).includes("integer")) both = ["integer"];
  if (both.length === 0) throw schemaError(`${at}: allOf members have no type in common`);
  return both.length === 1 ? both[0] : both;
}

function count(v: unknown, at: string, missing: number): number {
  if (v === undefined) return missing;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) throw schemaError(`${at}: must be a non-negative integer`);
  return v;
}

const dfas = new Map<string, Dfa>();
function cachedDfa(key: string, make: () => Dfa): Dfa {
  let dfa = dfas.get(key);
  if (!dfa) {
    dfa = make();
    if (dfas.size >= 256) dfas.delete(dfas.keys().next().value as string);
    dfas.set(key, dfa);
  }
  return dfa;
}

/** First bytes a node's documents may start with (for telling oneOf alternatives apart). */
function firstBytes(node: SchemaNode, out = new Set<number>()): Set<number> {
  switch (node.kind) {
    case "object": out.add(0x7b); break;
    case "array": out.add(0x5b); break;
    case "string": out.add(0x22); break;
    case "number": for (const c of "-0123456789") out.add(c.charCodeAt(0)); break;
    case "literal": for (const b of node.trie.children[0].keys()) out.add(b); break;
    case "union": for (const a of node.alternatives) firstBytes(a, out); break;
  }
  return out;
}

/** Literal values of a required property, when it has only constants. */
function discriminatorValues(node: SchemaNode, name: string): Set<string> | undefined {
  if (node.kind !== "object") return undefined;
  const p = node.properties.find((q) => q.name === name && q.required);
  return p && p.node.kind === "literal" ? new Set(p.node.values) : undefined;
}

function disjoint(a: SchemaNode, b: SchemaNode): boolean {
  const fa = firstBytes(a);
  if (![...firstBytes(b)].some((x) => fa.has(x))) return true;
  if (a.kind === "literal" && b.kind === "literal") return !a.values.some((v) => b.values.includes(v));
  if (a.kind === "object" && b.kind === "object") {
    for (const p of a.properties) {
      const va = discriminatorValues(a, p.name);
      const vb = discriminatorValues(b, p.name);
      if (va && vb && ![...va].some((v) => vb.has(v))) return true;
    }
  }
  return false;
}

function checkDisjoint(alternatives: SchemaNode[], at: string): void {
  for (let i = 0; i < alternatives.length; i++) {
    for (let j = i + 1; j < alternatives.length; j++) {
      if (!disjoint(alternatives[i], alternatives[j])) {
        throw schemaError(`${at}: alternatives ${i} and ${j} can match the same document; oneOf needs alternatives told apart (different types, or a required property with different const values); use anyOf if both may match`);
      }
    }
  }
}

