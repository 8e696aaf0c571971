/**
 * The parse stack of the JSON automaton and its byte transitions (automaton.ts interns the
 * stacks as states). Each frame is one value being written: an object or array waiting for its
 * next part, or a scalar in progress. A byte either extends the top frame, finishes it (its
 * parent moves on), or, for numbers and literals that may end anywhere, is handed to the parent.
 * Costs are the bytes of the shortest completion, computed from the schema's precomputed
 * lengths, never by search.
 */
import {
  MAX_EXPONENT_DIGITS, MAX_FRACTION_DIGITS, MAX_INT_DIGITS, objectClosable, objectNextCost, objectOpenCost,
  type ArrayNode, type LiteralNode, type ObjectNode, type SchemaNode,
} from "./schema.js";

type ObjectPhase = "open" | "comma" | "key" | "colon" | "value" | "after";
/** Number phases; the ones marked complete may end the number. */
type NumberPhase = "sign" | "zero" | "int" | "dot" | "frac" | "exp" | "expSign" | "expDigits";
const NUMBER_COMPLETE: ReadonlySet<NumberPhase> = new Set(["zero", "int", "frac", "expDigits"]);

/**
 * String sub-states: normal, after a backslash, inside \uXXXX (digits seen), inside a UTF-8
 * sequence (bytes left, and the range the next one must be in).
 */
type StringPhase = { s: "normal" } | { s: "escape" } | { s: "hex"; seen: number } | { s: "utf8"; left: number; lo: number; hi: number };

/** How string bytes are checked (see AutomatonOptions.strictUtf8 in automaton.ts). */
export type Utf8Mode = "strict" | "lax";


/** One level of the parse stack; the top is the innermost value being written. */
export type Frame =
  | { t: "value"; node: SchemaNode; space: boolean; utf8: Utf8Mode }
  | { t: "object"; node: ObjectNode; ph: ObjectPhase; j: number; trie: number; space: boolean; utf8: Utf8Mode }
  | { t: "array"; node: ArrayNode; ph: "open" | "value" | "after"; utf8: Utf8Mode }
  | { t: "string"; ph: StringPhase; utf8: Utf8Mode }
  | { t: "number"; integer: boolean; ph: NumberPhase; digits: number }
  | { t: "literal"; node: LiteralNode; trie: number };

/** What a frame does with a byte. */
type Feed =
  | { r: "replace"; frames: Frame[] } // consumed: the frame becomes these frames (parent first)
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
const ESCAPES = new Set([...'"\\/bfnrt'].map(ch));

/** A frame as a short string; a stack's key identifies its state. */
export function frameKey(f: Frame): string {
  switch (f.t) {
    case "value":
      return `v${f.node.id}${f.space ? "s" : ""}`;
    case "object":
      return `o${f.node.id}:${f.ph}:${f.j}:${f.trie}${f.space ? "s" : ""}`;
    case "array":
      return `a${f.node.id}:${f.ph}`;
    case "string":
      return `s${f.ph.s}${f.ph.s === "hex" ? f.ph.seen : f.ph.s === "utf8" ? `${f.ph.left}:${f.ph.lo}:${f.ph.hi}` : ""}`;
    case "number":
      return `n${f.integer ? "i" : "f"}:${f.ph}:${f.digits}`;
    case "literal":
      return `l${f.node.id}:${f.trie}`;
  }
}

/** The stack after one byte, or null. The input stack is never modified. */
export function step(stack: Frame[], byte: number): Frame[] | null {
  const s = stack.slice();
  for (;;) {
    const top = s.pop();
    if (top === undefined) return null; // the document is finished: nothing may follow
    const fed = feed(top, byte);
    switch (fed.r) {
      case "reject":
        return null;
      case "replace":
        s.push(...fed.frames);
        return s;
      case "close":
        childDone(s);
        return s;
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
  if (parent.t === "object") s.push({ ...parent, ph: "after" });
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
      return feedString(f, b);
    case "number":
      return feedNumber(f, b);
    case "literal":
      return feedLiteral(f.node, f.trie, b);
  }
}

const replace = (...frames: Frame[]): Feed => ({ r: "replace", frames });
const REJECTED: Feed = { r: "reject" };

function startValue(f: Extract<Frame, { t: "value" }>, b: number): Feed {
  if (b === SPACE) return f.space ? replace({ ...f, space: false }) : REJECTED;
  const node = f.node;
  switch (node.kind) {
    case "object":
      return b === ch("{") ? replace({ t: "object", node, ph: "open", j: -1, trie: 0, space: false, utf8: f.utf8 }) : REJECTED;
    case "array":
      return b === ch("[") ? replace({ t: "array", node, ph: "open", utf8: f.utf8 }) : REJECTED;
    case "string":
      return b === QUOTE ? replace({ t: "string", ph: { s: "normal" }, utf8: f.utf8 }) : REJECTED;
    case "number":
      if (b === ch("-")) return replace({ t: "number", integer: node.integer, ph: "sign", digits: 0 });
      if (isDigit(b)) return replace({ t: "number", integer: node.integer, ph: b === ch("0") ? "zero" : "int", digits: 1 });
      return REJECTED;
    case "literal":
      return feedLiteral(node, 0, b);
  }
}

/** Whether a key may continue from trie node `trie` toward a property allowed after property j. */
function keyReachable(node: ObjectNode, j: number, trie: number): boolean {
  const last = node.lastCandidate[j + 1];
  return node.keys.below[trie].some((k) => k > j && k <= last);
}

function feedObject(f: Extract<Frame, { t: "object" }>, b: number): Feed {
  const node = f.node;
  switch (f.ph) {
    case "open":
    case "comma":
      if (f.ph === "open" && b === ch("}") && objectClosable(node, -1)) return { r: "close" };
      if (f.ph === "comma" && b === SPACE) return f.space ? replace({ ...f, space: false }) : REJECTED;
      return b === QUOTE ? keyByte(f, 0, b) : REJECTED;
    case "key":
      return keyByte(f, f.trie, b);
    case "colon":
      if (b !== ch(":")) return REJECTED;
      return replace({ ...f, ph: "value" }, { t: "value", node: node.properties[f.j].node, space: true, utf8: f.utf8 });
    case "after":
      if (b === ch(",") && node.lastCandidate[f.j + 1] > f.j) return replace({ ...f, ph: "comma", space: true });
      if (b === ch("}") && objectClosable(node, f.j)) return { r: "close" };
      return REJECTED;
    case "value":
      throw new Error("json-schema automaton: an object waiting for a value is never on top (bug)");
  }
}

function keyByte(f: Extract<Frame, { t: "object" }>, trie: number, b: number): Feed {
  const child = f.node.keys.children[trie].get(b);
  if (child === undefined || !keyReachable(f.node, f.j, child)) return REJECTED;
  const done = f.node.keys.terminal[child];
  // Quoted keys are prefix-free: a finished key is the whole key.
  if (done >= 0) return replace({ ...f, ph: "colon", j: done, trie: 0, space: false });
  return replace({ ...f, ph: "key", trie: child, space: false });
}

function feedArray(f: Extract<Frame, { t: "array" }>, b: number): Feed {
  const items = f.node.items;
  if (f.ph === "open") {
    if (b === ch("]")) return { r: "close" };
    return items ? { r: "expand", frames: [{ ...f, ph: "value" }, { t: "value", node: items, space: false, utf8: f.utf8 }] } : REJECTED;
  }
  if (f.ph === "after") {
    if (b === ch("]")) return { r: "close" };
    if (b === ch(",") && items) return replace({ ...f, ph: "value" }, { t: "value", node: items, space: true, utf8: f.utf8 });
    return REJECTED;
  }
  throw new Error("json-schema automaton: an array waiting for a value is never on top (bug)");
}

/** After a UTF-8 lead byte: [continuation bytes left, range of the next one], or undefined if invalid. */
function utf8Lead(b: number, mode: Utf8Mode): [number, number, number] | undefined {
  if (mode === "lax") {
    // By the lead byte's high bits alone, as llama.cpp's grammar decodes UTF-8.
    if (b < 0xc0) return undefined;
    return [b < 0xe0 ? 1 : b < 0xf0 ? 2 : 3, 0x80, 0xbf];
  }
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

function feedString(f: Extract<Frame, { t: "string" }>, b: number): Feed {
  const ph = f.ph;
  const str = (next: StringPhase): Feed => replace({ t: "string", ph: next, utf8: f.utf8 });
  switch (ph.s) {
    case "normal": {
      if (b === QUOTE) return { r: "close" };
      if (b === BACKSLASH) return str({ s: "escape" });
      if (b < 0x20) return REJECTED; // control characters must be escaped
      if (b < 0x80) return str(ph);
      const lead = utf8Lead(b, f.utf8);
      return lead ? str({ s: "utf8", left: lead[0], lo: lead[1], hi: lead[2] }) : REJECTED;
    }
    case "escape":
      if (b === ch("u")) return str({ s: "hex", seen: 0 });
      return ESCAPES.has(b) ? str({ s: "normal" }) : REJECTED;
    case "hex":
      if (!isHex(b)) return REJECTED;
      return str(ph.seen === 3 ? { s: "normal" } : { s: "hex", seen: ph.seen + 1 });
    case "utf8":
      if (b < ph.lo || b > ph.hi) return REJECTED;
      return str(ph.left === 1 ? { s: "normal" } : { s: "utf8", left: ph.left - 1, lo: 0x80, hi: 0xbf });
  }
}

function feedNumber(f: Extract<Frame, { t: "number" }>, b: number): Feed {
  const to = (ph: NumberPhase, digits: number): Feed => replace({ ...f, ph, digits });
  const digit = isDigit(b);
  switch (f.ph) {
    case "sign":
      if (digit) return to(b === ch("0") ? "zero" : "int", 1);
      break;
    case "int":
      if (digit && f.digits < MAX_INT_DIGITS) return to("int", f.digits + 1);
    // falls through: after the integer part, as after a lone zero
    case "zero":
      if (!f.integer && b === ch(".")) return to("dot", 0);
      if (!f.integer && (b === ch("e") || b === ch("E"))) return to("exp", 0);
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
      return 1;
    case "string":
      return f.ph.s === "normal" ? 1 : f.ph.s === "escape" ? 2 : f.ph.s === "hex" ? 5 - f.ph.seen : f.ph.left + 1;
    case "number":
      return NUMBER_COMPLETE.has(f.ph) ? 0 : 1;
    case "literal":
      return f.node.trie.minRemaining[f.trie];
  }
}

function objectCost(f: Extract<Frame, { t: "object" }>): number {
  const node = f.node;
  switch (f.ph) {
    case "open":
      return objectOpenCost(node);
    case "comma":
      return objectNextCost(node, f.j);
    case "key": {
      // The cheapest property this key prefix can still become.
      const last = node.lastCandidate[f.j + 1];
      const depth = node.keys.depth[f.trie];
      let best = Infinity;
      for (const k of node.keys.below[f.trie]) {
        if (k <= f.j || k > last) continue;
        const p = node.properties[k];
        best = Math.min(best, p.key.length - depth + 1 + p.node.minLength + node.rest[k + 1]);
      }
      return best;
    }
    case "colon":
      return 1 + node.properties[f.j].node.minLength + node.rest[f.j + 1];
    case "value":
    case "after":
      return node.rest[f.j + 1];
  }
}

/** Bytes of the shortest completion of a stack: the top frame plus what each enclosing container still needs. */
export function stackCost(stack: Frame[]): number {
  if (stack.length === 0) return 0;
  let total = topCost(stack[stack.length - 1]);
  for (let i = 0; i < stack.length - 1; i++) {
    const f = stack[i];
    // Below the top only containers waiting for a value: objects owe rest(j), arrays owe "]".
    total += f.t === "object" ? f.node.rest[f.j + 1] : 1;
  }
  return total;
}
