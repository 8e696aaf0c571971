/**
 * The compiled form of a schema (schema.ts builds it): node types, and the byte lengths of the
 * shortest completions that the automaton's costs (frames.ts) are computed from.
 */
import type { JsonSchema } from "./validate.js";
import type { NumberBounds } from "./numbers.js";
import type { Dfa } from "./regex.js";

const encoder = new TextEncoder();

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
  /** Bytes of the shortest JSON text this node accepts (Infinity: none). */
  minLength: number;
}

export interface ObjectNode extends NodeBase {
  kind: "object";
  properties: PropertyNode[];
  keys: ByteTrie;
  /** Schema of extra properties (written after the declared ones), or undefined: none. */
  additional: SchemaNode | undefined;
  /** Bytes of the shortest extra key with its quotes (a declared name is never an extra key). */
  extraKeyMin: number;
  minProperties: number;
  maxProperties: number;
  /** Property counts at or above this are equivalent (state keys clamp to it). */
  countCap: number;
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
  /** Schemas of the first items (`prefixItems`). */
  prefix: SchemaNode[];
  /** Schema of the items after the prefix; undefined: no more items. */
  items: SchemaNode | undefined;
  minItems: number;
  maxItems: number;
  /** Item counts at or above this are equivalent. */
  countCap: number;
}

export interface StringNode extends NodeBase {
  kind: "string";
  /** Characters (code points). */
  minChars: number;
  maxChars: number;
  /** `pattern`/`format` automaton; strings that have one are ASCII. */
  dfa: Dfa | undefined;
  /** (dfa state, length) → bytes to the closing quote, memoized (regex strings with length limits). */
  memo: Map<number, number>;
}

export interface NumberNode extends NodeBase {
  kind: "number";
  integer: boolean;
  bounds: NumberBounds | undefined;
}

/** A closed set of JSON texts: enum and const values, booleans, null. */
export interface LiteralNode extends NodeBase {
  kind: "literal";
  values: string[];
  trie: ByteTrie;
}

/** Any of the alternatives (anyOf, oneOf, type arrays); none: nothing matches. */
export interface UnionNode extends NodeBase {
  kind: "union";
  alternatives: SchemaNode[];
}

export type SchemaNode = ObjectNode | ArrayNode | StringNode | NumberNode | LiteralNode | UnionNode;

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
  /** Fixed text before and after the document (tool calls: `<tool_call>\n` … `\n</tool_call>`). */
  prefix?: Uint8Array;
  suffix?: Uint8Array;
  /**
   * Lazy constraints (tool calls in "auto" mode): generation is free until the output ends with
   * this text, then follows the automaton (prefix, document, suffix), then is free again.
   */
  trigger?: Uint8Array;
}

/** The compiled schema framed by fixed text: the output is `prefix`, the document, then `suffix`. */
export function framedSchema(compiled: CompiledJsonSchema, prefix: string, suffix: string, trigger?: string): CompiledJsonSchema {
  const p = encoder.encode(prefix);
  const s = encoder.encode(suffix);
  const key = `${JSON.stringify([prefix, suffix, trigger ?? null])}${compiled.key}`;
  const framed: CompiledJsonSchema = { ...compiled, prefix: p, suffix: s, key, minTokens: compiled.minTokens + p.length + s.length };
  if (trigger !== undefined) framed.trigger = encoder.encode(trigger);
  return framed;
}

/** Bytes of `"key":value` at its shortest. */
export function propertyLength(p: PropertyNode): number {
  return p.key.length + 1 + p.node.minLength;
}

/** Bytes of the shortest extra property `"k":value` (Infinity when extras are not allowed). */
export function extraLength(node: ObjectNode): number {
  return node.additional ? node.extraKeyMin + 1 + node.additional.minLength : Infinity;
}

/** Whether a required property comes after property j. */
export function requiredAfter(node: ObjectNode, j: number): boolean {
  for (let k = j + 1; k < node.properties.length; k++) if (node.properties[k].required) return true;
  return false;
}

/**
 * Bytes to finish an object after property j (-1: none yet) with `count` properties written:
 * the required ones still due, enough optional or extra ones for minProperties, commas, `}`.
 * `first`: nothing written yet, so the first property needs no comma.
 */
export function objectFinish(node: ObjectNode, j: number, count: number, first: boolean): number {
  let total = 1;
  let written = 0;
  const optional: number[] = [];
  for (let k = j + 1; k < node.properties.length; k++) {
    const p = node.properties[k];
    if (p.required) {
      total += propertyLength(p);
      written++;
    } else optional.push(propertyLength(p));
  }
  let need = Math.max(0, node.minProperties - count - written);
  if (count + written + need > node.maxProperties) return Infinity;
  if (need > 0) {
    optional.sort((a, b) => a - b);
    const extra = extraLength(node);
    for (let i = 0; need > 0; need--) {
      if (i < optional.length && optional[i] <= extra) total += optional[i++];
      else if (extra < Infinity) total += extra;
      else return Infinity;
      written++;
    }
  }
  return total + written - (first && written > 0 ? 1 : 0);
}

/** The schema of item i of an array, or undefined when no item may be there. */
export function itemAt(node: ArrayNode, i: number): SchemaNode | undefined {
  if (i >= node.maxItems) return undefined;
  return i < node.prefix.length ? node.prefix[i] : node.items;
}

/** Bytes to finish an array with `i` items written: the items minItems still needs, commas, `]`. */
export function arrayFinish(node: ArrayNode, i: number, first: boolean): number {
  let total = 1;
  for (let k = i; k < node.minItems; k++) {
    const item = itemAt(node, k);
    if (!item) return Infinity;
    total += item.minLength + (first && k === i ? 0 : 1);
  }
  return total;
}

/**
 * Bytes from inside a string (regex state `state`, `chars` characters written) to its closing
 * quote included, Infinity when the pattern or length limits cannot be met from there.
 */
export function stringRest(node: StringNode, state: number, chars: number): number {
  if (chars > node.maxChars) return Infinity;
  const dfa = node.dfa;
  if (!dfa) return 1 + Math.max(0, node.minChars - chars);
  if (chars >= node.minChars && node.maxChars === Infinity) return 1 + dfa.dist[state];
  const key = state * 65536 + Math.min(chars, 65535);
  const known = node.memo.get(key);
  if (known !== undefined) return known;
  node.memo.set(key, Infinity); // no cycles: chars grows on every edge
  let best = chars >= node.minChars && dfa.accept[state] ? 1 : Infinity;
  if (chars < node.maxChars) {
    for (const e of dfa.edges[state]) best = Math.min(best, e.weight + stringRest(node, e.to, chars + 1));
  }
  node.memo.set(key, best);
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

/** Every byte of the schema's keys and literals (each must be writable as one token). */
export function literalBytes(root: SchemaNode): Set<number> {
  const out = new Set<number>();
  const seen = new Set<SchemaNode>();
  const visit = (node: SchemaNode): void => {
    if (seen.has(node)) return;
    seen.add(node);
    if (node.kind === "object") {
      for (const p of node.properties) {
        for (const b of p.key) out.add(b);
        visit(p.node);
      }
      if (node.additional) visit(node.additional);
    } else if (node.kind === "array") {
      node.prefix.forEach(visit);
      if (node.items) visit(node.items);
    } else if (node.kind === "literal") {
      for (const v of node.values) for (const b of encoder.encode(v)) out.add(b);
    } else if (node.kind === "union") node.alternatives.forEach(visit);
  };
  visit(root);
  return out;
}
