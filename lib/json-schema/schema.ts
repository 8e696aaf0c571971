/**
 * Compiles a `jsonSchema` option into the tree that constrained decoding walks. The accepted
 * subset is the validator's (lib/eval/json-validate.ts, checked by its `checkSchema`), narrowed
 * to what can be generated:
 *
 * - objects produce only declared properties, in declared order, each at most once, every
 *   `required` one present (`additionalProperties: false` semantics whatever the schema says);
 *   an object without `properties` can only be `{}`;
 * - arrays need `items` to hold anything (without it only `[]` is produced);
 * - numbers have at most 15 integer and 15 fraction digits and a 2-digit exponent (so they
 *   always parse to a finite number); integers have no fraction or exponent;
 * - a schema needs `type` or `enum` (or object/array keywords that imply the type): an
 *   arbitrary JSON value cannot be bounded in length, so `{}` is rejected.
 *
 * The output is compact JSON: whitespace is only allowed as one optional space at the start,
 * after `:` and after `,`.
 */
import { InvalidOptionError } from "../errors.js";
import { checkSchema, type JsonSchema, type JsonSchemaType } from "../eval/json-validate.js";

export type { JsonSchema } from "../eval/json-validate.js";

/** Max digits of an integer part / fraction / exponent: keeps every number finite once parsed. */
export const MAX_INT_DIGITS = 15;
export const MAX_FRACTION_DIGITS = 15;
export const MAX_EXPONENT_DIGITS = 2;

/** A trie of byte strings (object keys with their quotes, or enum literals as JSON text). */
export interface ByteTrie {
  /** children[node] maps a byte to the child node. Node 0 is the root. */
  children: Map<number, number>[];
  depth: number[];
  /** Index of the string that ends at the node, or -1. */
  terminal: number[];
  /** Fewest bytes from the node to the end of a string. */
  minRemaining: number[];
  /** Indexes of the strings below the node, ascending. */
  below: number[][];
}

interface NodeBase {
  /** Unique within one compiled schema; part of automaton state keys. */
  id: number;
  /** Bytes of the shortest JSON text this node accepts. */
  minLength: number;
}

export interface ObjectNode extends NodeBase {
  kind: "object";
  properties: PropertyNode[];
  keys: ByteTrie;
  /** Indexed by j + 1 for j = -1 … n-1 (j: the last property written, -1 for none). */
  rest: number[];
  /** Highest property index that may come after property j (== j when none may). */
  lastCandidate: number[];
}

export interface PropertyNode {
  name: string;
  /** `JSON.stringify(name)` as UTF-8: the only spelling of the key that is generated. */
  key: Uint8Array;
  required: boolean;
  node: SchemaNode;
}

export interface ArrayNode extends NodeBase {
  kind: "array";
  items: SchemaNode | undefined;
}

export interface StringNode extends NodeBase {
  kind: "string";
}

export interface NumberNode extends NodeBase {
  kind: "number";
  integer: boolean;
}

/** A closed set of JSON texts: enum values, or `true`/`false`. */
export interface LiteralNode extends NodeBase {
  kind: "literal";
  values: string[];
  trie: ByteTrie;
}

export type SchemaNode = ObjectNode | ArrayNode | StringNode | NumberNode | LiteralNode;

/** A schema ready for constrained decoding. */
export interface CompiledJsonSchema {
  /** The schema as given (what results are validated against). */
  schema: JsonSchema;
  root: SchemaNode;
  /** The schema's JSON text: the cache key of everything built from it (property order matters). */
  key: string;
  /**
   * Fewest tokens any answer needs: the byte length of the shortest valid document (every byte
   * can always be written as one token). `maxTokens` below this is rejected.
   */
  minTokens: number;
}

const encoder = new TextEncoder();

/**
 * Checks and compiles a schema.
 * @throws InvalidOptionError (option `jsonSchema`) naming where and why, e.g. an unsupported keyword.
 */
export function compileJsonSchema(schema: unknown): CompiledJsonSchema {
  const problems = checkSchema(schema);
  if (problems.length > 0) throw schemaError(problems[0]);
  let nextId = 0;
  const compile = (s: JsonSchema, at: string): SchemaNode => {
    const id = nextId++;
    if (s.enum !== undefined) return literalNode(id, s, at);
    const type = s.type ?? impliedType(s, at);
    switch (type) {
      case "object":
        return objectNode(id, s, at, compile);
      case "array":
        return { id, kind: "array", items: s.items ? compile(s.items, `${at}/items`) : undefined, minLength: 2 };
      case "string":
        return { id, kind: "string", minLength: 2 };
      case "number":
      case "integer":
        return { id, kind: "number", integer: type === "integer", minLength: 1 };
      case "boolean":
        return literal(id, ["true", "false"]);
    }
  };
  const root = compile(schema as JsonSchema, "#");
  return { schema: schema as JsonSchema, root, key: JSON.stringify(schema), minTokens: root.minLength };
}

/** The fewest `maxTokens` a schema needs (see {@link CompiledJsonSchema.minTokens}). @throws InvalidOptionError */
export function minimumMaxTokens(schema: JsonSchema): number {
  return compileJsonSchema(schema).minTokens;
}

function schemaError(problem: string): InvalidOptionError {
  const error = new InvalidOptionError("jsonSchema", "a schema mlx-node can enforce", problem);
  // The generic message would quote the problem as a JSON string; say it plainly instead.
  error.message = `Invalid option "jsonSchema": ${problem}`;
  return error;
}

function impliedType(s: JsonSchema, at: string): JsonSchemaType {
  if (s.properties !== undefined || s.required !== undefined || s.additionalProperties !== undefined) return "object";
  if (s.items !== undefined) return "array";
  throw schemaError(`${at}: needs "type" or "enum" (an arbitrary JSON value cannot be generated with a guaranteed length)`);
}

function literalNode(id: number, s: JsonSchema, at: string): LiteralNode {
  const values: string[] = [];
  for (const v of s.enum ?? []) {
    if (typeof v === "number" && !Number.isFinite(v)) throw schemaError(`${at}/enum: ${v} is not a JSON number`);
    if (s.type !== undefined && !literalHasType(v, s.type)) continue;
    const text = JSON.stringify(v);
    if (!values.includes(text)) values.push(text);
  }
  if (values.length === 0) throw schemaError(`${at}/enum: no value has type "${String(s.type)}"`);
  return literal(id, values);
}

function literalHasType(v: unknown, type: JsonSchemaType): boolean {
  if (type === "integer") return typeof v === "number" && Number.isInteger(v);
  if (type === "number") return typeof v === "number";
  return typeof v === type;
}

function literal(id: number, values: string[]): LiteralNode {
  const trie = buildTrie(values.map((v) => encoder.encode(v)));
  return { id, kind: "literal", values, trie, minLength: trie.minRemaining[0] };
}

function objectNode(id: number, s: JsonSchema, at: string, compile: (s: JsonSchema, at: string) => SchemaNode): ObjectNode {
  const declared = Object.entries(s.properties ?? {});
  const required = new Set(s.required ?? []);
  for (const name of required) {
    if (!declared.some(([n]) => n === name)) {
      throw schemaError(`${at}/required: "${name}" is not in "properties" (only declared properties are generated)`);
    }
  }
  const properties: PropertyNode[] = declared.map(([name, sub]) => ({
    name,
    key: encoder.encode(JSON.stringify(name)),
    required: required.has(name),
    node: compile(sub, `${at}/properties/${name}`),
  }));
  const n = properties.length;
  // One entry per j = -1 … n-1, stored at j + 1.
  const rest = new Array<number>(n + 1);
  const lastCandidate = new Array<number>(n + 1);
  let tail = 1; // "}"
  let nextRequired = -1;
  for (let j = n - 1; j >= -1; j--) {
    rest[j + 1] = tail;
    lastCandidate[j + 1] = j === n - 1 ? j : nextRequired >= 0 ? nextRequired : n - 1;
    if (j >= 0 && properties[j].required) {
      tail += 1 + propertyLength(properties[j]); // "," key ":" value
      nextRequired = j;
    }
  }
  const node: ObjectNode = { id, kind: "object", properties, keys: buildTrie(properties.map((p) => p.key)), rest, lastCandidate, minLength: 0 };
  node.minLength = 1 + objectOpenCost(node);
  return node;
}

/** Bytes of `"key":value` at its shortest. */
function propertyLength(p: PropertyNode): number {
  return p.key.length + 1 + p.node.minLength;
}

/** Whether `}` may follow property j (no required property after it). */
export function objectClosable(node: ObjectNode, j: number): boolean {
  return node.rest[j + 1] === 1;
}

/** Shortest completion right after `{`. */
export function objectOpenCost(node: ObjectNode): number {
  return objectClosable(node, -1) ? 1 : objectNextCost(node, -1);
}

/** Shortest completion when a property must come after property j (after `{` or `,`). */
export function objectNextCost(node: ObjectNode, j: number): number {
  let best = Infinity;
  for (let k = j + 1; k <= node.lastCandidate[j + 1]; k++) {
    best = Math.min(best, propertyLength(node.properties[k]) + node.rest[k + 1]);
  }
  return best;
}

/** Builds a byte trie; `minRemaining` and `below` are filled bottom-up. */
export function buildTrie(strings: Uint8Array[]): ByteTrie {
  const trie: ByteTrie = { children: [new Map()], depth: [0], terminal: [-1], minRemaining: [0], below: [[]] };
  strings.forEach((bytes, index) => {
    let node = 0;
    trie.below[0].push(index);
    for (const b of bytes) {
      let child = trie.children[node].get(b);
      if (child === undefined) {
        child = trie.children.length;
        trie.children[node].set(b, child);
        trie.children.push(new Map());
        trie.depth.push(trie.depth[node] + 1);
        trie.terminal.push(-1);
        trie.minRemaining.push(0);
        trie.below.push([]);
      }
      node = child;
      trie.below[node].push(index);
    }
    if (trie.terminal[node] < 0) trie.terminal[node] = index;
  });
  // Children always have higher ids than their parents, so one reverse pass is bottom-up.
  for (let node = trie.children.length - 1; node >= 0; node--) {
    let best = trie.terminal[node] >= 0 ? 0 : Infinity;
    for (const child of trie.children[node].values()) best = Math.min(best, 1 + trie.minRemaining[child]);
    trie.minRemaining[node] = best;
  }
  return trie;
}

/** Every byte of the schema's keys and enum literals (each must be writable as one token). */
export function literalBytes(node: SchemaNode, out = new Set<number>()): Set<number> {
  if (node.kind === "object") {
    for (const p of node.properties) {
      for (const b of p.key) out.add(b);
      literalBytes(p.node, out);
    }
  } else if (node.kind === "array" && node.items) {
    literalBytes(node.items, out);
  } else if (node.kind === "literal") {
    for (const v of node.values) for (const b of encoder.encode(v)) out.add(b);
  }
  return out;
}
