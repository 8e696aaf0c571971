/**
 * The parse stack of the JSON automaton and its byte transitions (automaton.ts interns sets of
 * stacks as states: a union of schemas forks the stack, one per alternative still possible).
 * Each frame is one value being written: an object or array waiting for its next part, or a
 * scalar in progress. A byte either extends the top frame, finishes it (its parent moves on),
 * or, for numbers and literals that may end anywhere, is handed to the parent. Costs are the
 * bytes of the shortest completion, from the schema's precomputed lengths, never by search;
 * Infinity means the stack cannot be completed (the automaton drops it).
 */
import { boundedCost, endAllowed, fractionAllowed, MAX_EXPONENT_DIGITS, MAX_FRACTION_DIGITS, MAX_INT_DIGITS } from "./numbers.js";
import { ALPHABET } from "./regex.js";
import {
  arrayFinish, extraLength, itemAt, objectFinish, propertyLength, requiredAfter, stringRest,
  type ArrayNode, type LiteralNode, type NumberNode, type ObjectNode, type SchemaNode, type StringNode,
} from "./nodes.js";

type ObjectPhase = "open" | "comma" | "key" | "colon" | "value" | "after";
/** Number phases; unbounded numbers use them all, bounded ones sign/int/dot/frac. */
type NumberPhase = "sign" | "zero" | "int" | "dot" | "frac" | "exp" | "expSign" | "expDigits";
const NUMBER_COMPLETE: ReadonlySet<NumberPhase> = new Set(["zero", "int", "frac", "expDigits"]);

/**
 * String sub-states: normal, after a backslash, inside \uXXXX (digits seen; `d`: the first was
 * D, so the next must not make a surrogate), inside a UTF-8 sequence (bytes left, and the range
 * the next one must be in).
 */
type StringPhase = { s: "normal" } | { s: "escape" } | { s: "hex"; seen: number; d: boolean } | { s: "utf8"; left: number; lo: number; hi: number };

/** One level of the parse stack; the top is the innermost value being written. */
export type Frame =
  | { t: "value"; node: SchemaNode; space: boolean }
  /** j: last declared property written (-1: none); extra: the key being written is an extra one; trie: position in the declared keys. */
  | { t: "object"; node: ObjectNode; ph: ObjectPhase; j: number; trie: number; count: number; space: boolean; extra: boolean }
  | { t: "array"; node: ArrayNode; ph: "open" | "value" | "after"; i: number }
  | { t: "string"; node: StringNode; ph: StringPhase; chars: number; dfa: number }
  | { t: "number"; node: NumberNode; ph: NumberPhase; digits: number; negative: boolean; p: number }
  | { t: "literal"; node: LiteralNode; trie: number }
  /** Fixed text around the document (a tool call's `<tool_call>` and `</tool_call>`); `which` names it in keys. */
  | { t: "text"; bytes: Uint8Array; i: number; which: string };

/** What a frame does with a byte. */
type Feed =
  | { r: "replace"; frames: Frame[] } // consumed: the frame becomes these frames (parent first)
  | { r: "fork"; options: Frame[][] } // consumed: one stack per option
  | { r: "close" } // consumed and the value is finished: pop, tell the parent
  | { r: "ended" } // not consumed but the value is finished: pop, tell the parent, feed the byte to it
  | { r: "expand"; frames: Frame[] } // not consumed: replace the frame and feed the byte to the new top
  | { r: "reject" };

const SPACE = 0x20;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const ch = (c: string): number => c.charCodeAt(0);
const isDigit = (b: number): boolean => b >= 0x30 && b <= 0x39;
const isHex = (b: number): boolean => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);
/** Escape letters and the character each stands for. */
const ESCAPES = new Map([...'"\\/bfnrt'].map((c, i) => [ch(c), [0x22, 0x5c, 0x2f, 8, 12, 10, 13, 9][i]]));

/** A frame as a short string; a stack's key identifies it. */
export function frameKey(f: Frame): string {
  switch (f.t) {
    case "value":
      return `v${f.node.id}${f.space ? "s" : ""}`;
    case "object":
      return `o${f.node.id}:${f.ph}:${f.j}:${f.trie}:${f.count}${f.space ? "s" : ""}${f.extra ? "x" : ""}`;
    case "array":
      return `a${f.node.id}:${f.ph}:${f.i}`;
    case "string": {
      const ph = f.ph;
      const detail = ph.s === "hex" ? `${ph.seen}${ph.d ? "d" : ""}` : ph.s === "utf8" ? `${ph.left}:${ph.lo}:${ph.hi}` : "";
      return `s${f.node.id}:${ph.s}${detail}:${f.chars}:${f.dfa}`;
    }
    case "number":
      return `n${f.node.id}:${f.ph}:${f.digits}${f.node.bounds ? `:${f.negative ? "-" : ""}${f.p}` : ""}`;
    case "literal":
      return `l${f.node.id}:${f.trie}`;
    case "text":
      return `t${f.which}:${f.i}`;
  }
}

/** Appends to `out` every stack `stack` becomes after one byte (none: rejected). The input is never modified. */
export function step(stack: Frame[], byte: number, out: Frame[][]): void {
  const s = stack.slice();
  for (;;) {
    const top = s.pop();
    if (top === undefined) return; // the document is finished: nothing may follow
    if (top.t === "value" && top.node.kind === "union") {
      if (byte === SPACE && top.space) out.push([...s, { ...top, space: false }]);
      else for (const alt of top.node.alternatives) step([...s, { t: "value", node: alt, space: false }], byte, out);
      return;
    }
    const fed = feed(top, byte);
    switch (fed.r) {
      case "reject":
        return;
      case "replace":
        s.push(...fed.frames);
        out.push(s);
        return;
      case "fork":
        for (const option of fed.options) out.push([...s, ...option]);
        return;
      case "close":
        childDone(s);
        out.push(s);
        return;
      case "ended":
        childDone(s);
        continue;
      case "expand":
        s.push(...fed.frames);
        continue;
    }
  }
}

/** The parent of a finished value moves on to what may follow it. */
function childDone(s: Frame[]): void {
  const parent = s.pop();
  if (parent === undefined) return; // the root value is done
  if (parent.t === "text") s.push(parent); // the text after the document comes next
  else if (parent.t === "object") s.push({ ...parent, ph: "after", extra: false });
  else if (parent.t === "array") s.push({ ...parent, ph: "after" });
  else throw new Error("json-schema automaton: a scalar cannot have a child (bug)");
}

function feed(f: Frame, b: number): Feed {
  switch (f.t) {
    case "value":
      return startValue(f, b);
    case "object":
      return feedObject(f, b);
    case "array":
      return feedArray(f, b);
    case "string":
      return f.node.dfa ? feedPatternString(f, b) : feedString(f, b);
    case "number":
      return f.node.bounds ? feedBoundedNumber(f, b) : feedNumber(f, b);
    case "literal":
      return feedLiteral(f.node, f.trie, b);
    case "text":
      if (b !== f.bytes[f.i]) return REJECTED;
      return f.i + 1 === f.bytes.length ? replace() : replace({ ...f, i: f.i + 1 });
  }
}

const replace = (...frames: Frame[]): Feed => ({ r: "replace", frames });
const REJECTED: Feed = { r: "reject" };

function startValue(f: Extract<Frame, { t: "value" }>, b: number): Feed {
  if (b === SPACE) return f.space ? replace({ ...f, space: false }) : REJECTED;
  const node = f.node;
  switch (node.kind) {
    case "object":
      return b === ch("{") ? replace({ t: "object", node, ph: "open", j: -1, trie: 0, count: 0, space: false, extra: false }) : REJECTED;
    case "array":
      return b === ch("[") ? replace({ t: "array", node, ph: "open", i: 0 }) : REJECTED;
    case "string":
      return b === QUOTE ? replace({ t: "string", node, ph: { s: "normal" }, chars: 0, dfa: 0 }) : REJECTED;
    case "number": {
      const start: Extract<Frame, { t: "number" }> = { t: "number", node, ph: "sign", digits: 0, negative: false, p: 0 };
      if (b === ch("-")) return replace({ ...start, negative: true });
      return { r: "expand", frames: [start] };
    }
    case "literal":
      return feedLiteral(node, 0, b);
    case "union":
      throw new Error("json-schema automaton: unions are expanded by step (bug)");
  }
}

// ---- objects ----

/** Declared properties that may come next after property j with `count` written. */
function candidates(f: Extract<Frame, { t: "object" }>): number[] {
  const node = f.node;
  const out: number[] = [];
  for (let k = f.j + 1; k < node.properties.length; k++) {
    if (objectFinish(node, k, f.count + 1, false) < Infinity) out.push(k);
    if (node.properties[k].required) break; // a required property cannot be skipped
  }
  return out;
}

function extraAllowed(f: Extract<Frame, { t: "object" }>): boolean {
  const node = f.node;
  return node.additional !== undefined && !requiredAfter(node, f.j) && objectFinish(node, node.properties.length - 1, f.count + 1, false) < Infinity;
}

const bumped = (f: Extract<Frame, { t: "object" }>): number => Math.min(f.count + 1, f.node.countCap);

function feedObject(f: Extract<Frame, { t: "object" }>, b: number): Feed {
  const node = f.node;
  switch (f.ph) {
    case "open":
    case "comma": {
      if (f.ph === "open" && b === ch("}") && objectFinish(node, -1, 0, true) === 1) return { r: "close" };
      if (f.ph === "comma" && b === SPACE) return f.space ? replace({ ...f, space: false }) : REJECTED;
      if (b !== QUOTE) return REJECTED;
      const options: Frame[][] = [];
      const child = node.keys.children[0].get(QUOTE) ?? -1;
      if (child >= 0 && keyReachable(f, child)) options.push([{ ...f, ph: "key", trie: child, space: false, extra: false }]);
      if (extraAllowed(f)) options.push([{ ...f, ph: "key", trie: child, space: false, extra: true }]);
      return options.length ? { r: "fork", options } : REJECTED;
    }
    case "key":
      return f.extra ? extraKeyByte(f, b) : keyByte(f, b);
    case "colon": {
      if (b !== ch(":")) return REJECTED;
      const value = f.extra ? (node.additional as SchemaNode) : node.properties[f.j].node;
      return replace({ ...f, ph: "value" }, { t: "value", node: value, space: true });
    }
    case "after":
      if (b === ch(",") && (candidates(f).length > 0 || extraAllowed(f))) return replace({ ...f, ph: "comma", space: true });
      if (b === ch("}") && objectFinish(node, f.j, f.count, false) === 1) return { r: "close" };
      return REJECTED;
    case "value":
      throw new Error("json-schema automaton: an object waiting for a value is never on top (bug)");
  }
}

function keyReachable(f: Extract<Frame, { t: "object" }>, trie: number): boolean {
  const allowed = candidates(f);
  return f.node.keys.below[trie].some((k) => allowed.includes(k));
}

function keyByte(f: Extract<Frame, { t: "object" }>, b: number): Feed {
  const child = f.node.keys.children[f.trie].get(b);
  if (child === undefined || !keyReachable(f, child)) return REJECTED;
  const done = f.node.keys.terminal[child];
  // Quoted keys are prefix-free: a finished key is the whole key.
  if (done >= 0) return replace({ ...f, ph: "colon", j: done, trie: 0, count: bumped(f) });
  return replace({ ...f, trie: child });
}

/** Extra keys: printable ASCII without escapes, never a declared name (`trie` follows the declared keys to tell). */
function extraKeyByte(f: Extract<Frame, { t: "object" }>, b: number): Feed {
  const keys = f.node.keys;
  if (b === QUOTE) {
    const end = f.trie >= 0 ? keys.children[f.trie].get(QUOTE) : undefined;
    if (end !== undefined && keys.terminal[end] >= 0) return REJECTED;
    return replace({ ...f, ph: "colon", j: f.node.properties.length - 1, trie: 0, count: bumped(f) });
  }
  if (b < 0x20 || b >= 0x7f || b === BACKSLASH) return REJECTED;
  return replace({ ...f, trie: f.trie >= 0 ? (keys.children[f.trie].get(b) ?? -1) : -1 });
}

function objectCost(f: Extract<Frame, { t: "object" }>): number {
  const node = f.node;
  switch (f.ph) {
    case "open":
      return objectFinish(node, -1, 0, true);
    case "comma": {
      let best = extraAllowed(f) ? extraLength(node) + objectFinish(node, node.properties.length - 1, f.count + 1, false) : Infinity;
      for (const k of candidates(f)) best = Math.min(best, propertyLength(node.properties[k]) + objectFinish(node, k, f.count + 1, false));
      return best;
    }
    case "key": {
      if (f.extra) {
        const end = f.trie >= 0 ? node.keys.children[f.trie].get(QUOTE) : undefined;
        const keyRest = end !== undefined && node.keys.terminal[end] >= 0 ? 2 : 1;
        return keyRest + 1 + (node.additional as SchemaNode).minLength + objectFinish(node, node.properties.length - 1, f.count + 1, false);
      }
      const allowed = candidates(f);
      const depth = node.keys.depth[f.trie];
      let best = Infinity;
      for (const k of node.keys.below[f.trie]) {
        if (!allowed.includes(k)) continue;
        const p = node.properties[k];
        best = Math.min(best, p.key.length - depth + 1 + p.node.minLength + objectFinish(node, k, f.count + 1, false));
      }
      return best;
    }
    case "colon": {
      const value = f.extra ? (node.additional as SchemaNode) : node.properties[f.j].node;
      return 1 + value.minLength + objectFinish(node, f.j, f.count, false);
    }
    case "value":
    case "after":
      return objectFinish(node, f.j, f.count, false);
  }
}

// ---- arrays ----

function feedArray(f: Extract<Frame, { t: "array" }>, b: number): Feed {
  const node = f.node;
  const item = itemAt(node, f.i);
  const next = Math.min(f.i + 1, node.countCap);
  if (f.ph === "open") {
    if (b === ch("]") && node.minItems === 0) return { r: "close" };
    return item ? { r: "expand", frames: [{ ...f, ph: "value", i: next }, { t: "value", node: item, space: false }] } : REJECTED;
  }
  if (f.ph === "after") {
    if (b === ch("]") && f.i >= node.minItems) return { r: "close" };
    if (b === ch(",") && item) return replace({ ...f, ph: "value", i: next }, { t: "value", node: item, space: true });
    return REJECTED;
  }
  throw new Error("json-schema automaton: an array waiting for a value is never on top (bug)");
}

// ---- strings ----

/** After a UTF-8 lead byte: [continuation bytes left, range of the next one], or undefined if invalid. */
function utf8Lead(b: number): [number, number, number] | undefined {
  // Well-formed UTF-8 (Unicode table 3-7): the second byte's range rules out overlong forms,
  // surrogates and code points past U+10FFFF.
  if (b >= 0xc2 && b <= 0xdf) return [1, 0x80, 0xbf];
  if (b === 0xe0) return [2, 0xa0, 0xbf];
  if (b === 0xed) return [2, 0x80, 0x9f];
  if (b >= 0xe1 && b <= 0xef) return [2, 0x80, 0xbf];
  if (b === 0xf0) return [3, 0x90, 0xbf];
  if (b >= 0xf1 && b <= 0xf3) return [3, 0x80, 0xbf];
  if (b === 0xf4) return [3, 0x80, 0x8f];
  return undefined;
}

/** Character counts at or above this are equivalent for the node's limits. */
const charCap = (node: StringNode): number => (node.maxChars === Infinity ? node.minChars : node.maxChars + 1);

/** Strings without a pattern: any text, counted in code points at their first byte. */
function feedString(f: Extract<Frame, { t: "string" }>, b: number): Feed {
  const ph = f.ph;
  const node = f.node;
  const str = (next: StringPhase, chars = f.chars): Feed => (chars > node.maxChars ? REJECTED : replace({ ...f, ph: next, chars: Math.min(chars, charCap(node)) }));
  switch (ph.s) {
    case "normal": {
      if (b === QUOTE) return f.chars >= node.minChars ? { r: "close" } : REJECTED;
      if (b === BACKSLASH) return str({ s: "escape" }, f.chars + 1);
      if (b < 0x20) return REJECTED; // control characters must be escaped
      if (b < 0x80) return str(ph, f.chars + 1);
      const lead = utf8Lead(b);
      return lead ? str({ s: "utf8", left: lead[0], lo: lead[1], hi: lead[2] }, f.chars + 1) : REJECTED;
    }
    case "escape":
      if (b === ch("u")) return str({ s: "hex", seen: 0, d: false });
      return ESCAPES.has(b) ? str({ s: "normal" }) : REJECTED;
    case "hex":
      // \uD800-\uDFFF (surrogates) are never written: lone ones are not text.
      if (!isHex(b) || (ph.d && ph.seen === 1 && !(b >= 0x30 && b <= 0x37))) return REJECTED;
      return str(ph.seen === 3 ? { s: "normal" } : { s: "hex", seen: ph.seen + 1, d: ph.seen === 0 && (b === ch("d") || b === ch("D")) });
    case "utf8":
      if (b < ph.lo || b > ph.hi) return REJECTED;
      return str(ph.left === 1 ? { s: "normal" } : { s: "utf8", left: ph.left - 1, lo: 0x80, hi: 0xbf });
  }
}

/** Strings with a pattern or format: ASCII characters (raw or short escapes) stepped through the DFA. */
function feedPatternString(f: Extract<Frame, { t: "string" }>, b: number): Feed {
  const node = f.node;
  const dfa = node.dfa!;
  const char = (c: number): Feed => {
    const next = dfa.next[f.dfa * ALPHABET + c];
    if (next < 0) return REJECTED;
    const chars = Math.min(f.chars + 1, charCap(node));
    return stringRest(node, next, f.chars + 1) === Infinity ? REJECTED : replace({ ...f, ph: { s: "normal" }, chars, dfa: next });
  };
  if (f.ph.s === "escape") {
    const c = ESCAPES.get(b);
    return c === undefined ? REJECTED : char(c);
  }
  if (b === QUOTE) return f.chars >= node.minChars && dfa.accept[f.dfa] ? { r: "close" } : REJECTED;
  if (b === BACKSLASH) return replace({ ...f, ph: { s: "escape" } });
  return b >= 0x20 && b < 0x7f ? char(b) : REJECTED;
}

function stringCost(f: Extract<Frame, { t: "string" }>): number {
  const node = f.node;
  const ph = f.ph;
  if (node.dfa) {
    if (ph.s !== "escape") return stringRest(node, f.dfa, f.chars);
    let best = Infinity;
    for (const c of ESCAPES.values()) {
      const next = node.dfa.next[f.dfa * ALPHABET + c];
      if (next >= 0) best = Math.min(best, 1 + stringRest(node, next, f.chars + 1));
    }
    return best;
  }
  const rest = stringRest(node, 0, f.chars);
  return rest + (ph.s === "normal" ? 0 : ph.s === "escape" ? 1 : ph.s === "hex" ? 4 - ph.seen : ph.left);
}

// ---- numbers ----

function feedNumber(f: Extract<Frame, { t: "number" }>, b: number): Feed {
  const to = (ph: NumberPhase, digits: number): Feed => replace({ ...f, ph, digits });
  const digit = isDigit(b);
  const integer = f.node.integer;
  switch (f.ph) {
    case "sign":
      if (digit) return to(b === ch("0") ? "zero" : "int", 1);
      break;
    case "int":
      if (digit && f.digits < MAX_INT_DIGITS) return to("int", f.digits + 1);
    // falls through: after the integer part, as after a lone zero
    case "zero":
      if (!integer && b === ch(".")) return to("dot", 0);
      if (!integer && (b === ch("e") || b === ch("E"))) return to("exp", 0);
      break;
    case "dot":
      if (digit) return to("frac", 1);
      break;
    case "frac":
      if (digit && f.digits < MAX_FRACTION_DIGITS) return to("frac", f.digits + 1);
      if (b === ch("e") || b === ch("E")) return to("exp", 0);
      break;
    case "exp":
      if (b === ch("+") || b === ch("-")) return to("expSign", 0);
    // falls through: a digit may follow "e" directly
    case "expSign":
      if (digit) return to("expDigits", 1);
      break;
    case "expDigits":
      if (digit && f.digits < MAX_EXPONENT_DIGITS) return to("expDigits", f.digits + 1);
      break;
  }
  return NUMBER_COMPLETE.has(f.ph) ? { r: "ended" } : REJECTED;
}

/** Numbers with bounds: the integer part is tracked exactly (numbers.ts decides what may follow). */
function feedBoundedNumber(f: Extract<Frame, { t: "number" }>, b: number): Feed {
  const bounds = f.node.bounds!;
  switch (f.ph) {
    case "sign":
    case "int": {
      if (isDigit(b) && !(f.digits === 1 && f.p === 0) && f.digits < MAX_INT_DIGITS) {
        const p = f.p * 10 + (b - 0x30);
        if (boundedCost(bounds, f.negative, p, f.digits + 1) < Infinity) return replace({ ...f, ph: "int", p, digits: f.digits + 1 });
      }
      if (f.ph === "sign") return REJECTED;
      if (b === ch(".") && fractionAllowed(bounds, f.negative, f.p)) return replace({ ...f, ph: "dot", digits: 0 });
      return endAllowed(bounds, f.negative, f.p) ? { r: "ended" } : REJECTED;
    }
    case "dot":
      return isDigit(b) ? replace({ ...f, ph: "frac", digits: 1 }) : REJECTED;
    case "frac":
      if (isDigit(b) && f.digits < MAX_FRACTION_DIGITS) return replace({ ...f, digits: f.digits + 1 });
      return { r: "ended" };
    default:
      throw new Error("json-schema automaton: bounded numbers have no exponent (bug)");
  }
}

function numberCost(f: Extract<Frame, { t: "number" }>): number {
  const bounds = f.node.bounds;
  if (!bounds) return NUMBER_COMPLETE.has(f.ph) ? 0 : 1;
  if (f.ph === "dot") return 1;
  if (f.ph === "frac") return 0;
  return boundedCost(bounds, f.negative, f.p, f.digits);
}

// ---- literals ----

function feedLiteral(node: LiteralNode, trie: number, b: number): Feed {
  const { children, terminal } = node.trie;
  const child = children[trie].get(b);
  if (child === undefined) return terminal[trie] >= 0 && trie !== 0 ? { r: "ended" } : REJECTED;
  // A literal nothing can extend is finished at once; "1" among ["1","12"] waits for the next byte.
  if (terminal[child] >= 0 && children[child].size === 0) return { r: "close" };
  return replace({ t: "literal", node, trie: child });
}

/** Own cost of the top frame: bytes to finish it. */
function topCost(f: Frame): number {
  switch (f.t) {
    case "value":
      return f.node.minLength;
    case "object":
      return objectCost(f);
    case "array":
      return arrayFinish(f.node, f.i, f.ph === "open");
    case "string":
      return stringCost(f);
    case "number":
      return numberCost(f);
    case "literal":
      return f.node.trie.minRemaining[f.trie];
    case "text":
      return f.bytes.length - f.i;
  }
}

/** Bytes of the shortest completion of a stack: the top frame plus what each enclosing container still needs. */
export function stackCost(stack: Frame[]): number {
  if (stack.length === 0) return 0;
  let total = topCost(stack[stack.length - 1]);
  for (let i = 0; i < stack.length - 1 && total < Infinity; i++) {
    const f = stack[i];
    // Below the top only containers waiting for a value.
    if (f.t === "object") total += objectFinish(f.node, f.j, f.count, false);
    else if (f.t === "array") total += arrayFinish(f.node, f.i, false);
    else if (f.t === "text") total += f.bytes.length - f.i;
    else if (f.t === "value") total += f.node.minLength; // the document under its prefix text
  }
  return total;
}
