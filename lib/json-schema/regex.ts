/**
 * The regular expressions of JSON Schema's `pattern` (ECMAScript syntax, search semantics: the
 * pattern may match anywhere unless anchored) compiled to a DFA over the characters a constrained
 * string may hold. Generated strings are ASCII (a subset of what any pattern allows, so always
 * valid); the supported syntax is what schemas use: literals, `.`, classes and ranges, `\d \w \s`
 * and their negations, groups (capturing, `(?:`, named), alternation, the quantifiers
 * `? * + {n} {n,} {n,m}` (lazy forms too), and `^`/`$` at the ends of top-level alternatives.
 * Lookaround, backreferences, word boundaries and `\p{…}` are refused by name.
 */

/** Characters a DFA reads: ASCII code points. */
export const ALPHABET = 128;
/** Most NFA states a pattern may expand to (bounded repetition copies its body). */
const MAX_NFA_STATES = 20_000;
/** Most DFA states a pattern may determinize to. */
const MAX_DFA_STATES = 4_000;

/** A parse or size problem; the schema compiler turns it into an InvalidOptionError with the path. */
export class PatternError extends Error {}

/**
 * Bytes a character costs inside a JSON string: 1 for printable ASCII, 2 for `"` and `\` and the
 * short escapes (\b \t \n \f \r), Infinity for other control characters (never generated).
 */
export function charWeight(c: number): number {
  if (c === 0x22 || c === 0x5c) return 2;
  if (c >= 0x20 && c < 0x7f) return 1;
  return c === 8 || c === 9 || c === 10 || c === 12 || c === 13 ? 2 : Infinity;
}

/** A determinized pattern: transitions, acceptance, and distances to acceptance in JSON bytes. */
export interface Dfa {
  /** next[state * ALPHABET + c]: the state after character c, or -1. */
  next: Int32Array;
  accept: Uint8Array;
  /** Fewest JSON-string bytes from a state to an accepting one (Infinity: none). */
  dist: Float64Array;
  /** Per state: distinct successors with the cheapest character leading to each. */
  edges: { to: number; weight: number }[][];
  size: number;
}

type CharSet = Uint8Array; // length ALPHABET, 1 = member

type Ast =
  | { k: "set"; set: CharSet }
  | { k: "cat"; parts: Ast[] }
  | { k: "alt"; options: Ast[] }
  | { k: "rep"; body: Ast; min: number; max: number } // max Infinity: unbounded
  | { k: "bol" }
  | { k: "eol" };

const range = (lo: number, hi: number, set: CharSet = new Uint8Array(ALPHABET)): CharSet => {
  for (let c = lo; c <= Math.min(hi, ALPHABET - 1); c++) set[c] = 1;
  return set;
};
const negate = (set: CharSet): CharSet => set.map((v) => 1 - v);
const DIGIT = range(0x30, 0x39);
const WORD = (() => {
  const s = range(0x30, 0x39);
  range(0x41, 0x5a, s);
  range(0x61, 0x7a, s);
  s[0x5f] = 1;
  return s;
})();
const SPACE = (() => {
  const s = range(9, 13);
  s[0x20] = 1;
  return s;
})();
const DOT = (() => {
  const s = range(0, ALPHABET - 1);
  s[10] = 0;
  s[13] = 0;
  return s;
})();
const ANY = range(0, ALPHABET - 1);

/** Parses ECMAScript regex source (the subset above). */
class Parser {
  private i = 0;
  constructor(private readonly src: string) {}

  parse(): Ast {
    const ast = this.alternation();
    if (this.i < this.src.length) throw new PatternError(`unexpected "${this.src[this.i]}" at ${this.i}`);
    return ast;
  }

  private alternation(): Ast {
    const options = [this.sequence()];
    while (this.src[this.i] === "|") {
      this.i++;
      options.push(this.sequence());
    }
    return options.length === 1 ? options[0] : { k: "alt", options };
  }

  private sequence(): Ast {
    const parts: Ast[] = [];
    while (this.i < this.src.length && this.src[this.i] !== "|" && this.src[this.i] !== ")") {
      parts.push(this.quantified(this.atom()));
    }
    return { k: "cat", parts };
  }

  private quantified(atom: Ast): Ast {
    const c = this.src[this.i];
    let min: number;
    let max: number;
    if (c === "*" || c === "+" || c === "?") {
      this.i++;
      [min, max] = c === "*" ? [0, Infinity] : c === "+" ? [1, Infinity] : [0, 1];
    } else if (c === "{" && /^\{\d+(,\d*)?\}/.test(this.src.slice(this.i))) {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(this.src.slice(this.i)) as RegExpExecArray;
      this.i += m[0].length;
      min = Number(m[1]);
      max = m[2] === undefined ? min : m[3] === "" ? Infinity : Number(m[3]);
      if (max < min) throw new PatternError(`quantifier ${m[0]} has max below min`);
      if (min > 1000 || (max !== Infinity && max > 1000)) throw new PatternError(`quantifier ${m[0]} is above 1000`);
    } else return atom;
    if (atom.k === "bol" || atom.k === "eol") throw new PatternError("a quantified anchor");
    if (this.src[this.i] === "?") this.i++; // lazy: the same language
    return { k: "rep", body: atom, min, max };
  }

  private atom(): Ast {
    const c = this.src[this.i++];
    switch (c) {
      case "(": {
        if (this.src.startsWith("?:", this.i)) this.i += 2;
        else if (/^\?<[A-Za-z_$][\w$]*>/.test(this.src.slice(this.i))) this.i = this.src.indexOf(">", this.i) + 1;
        else if (this.src[this.i] === "?") throw new PatternError("lookahead/lookbehind groups are not supported");
        const inner = this.alternation();
        if (this.src[this.i++] !== ")") throw new PatternError("unclosed group");
        return inner;
      }
      case "[":
        return { k: "set", set: this.charClass() };
      case ".":
        return { k: "set", set: DOT };
      case "^":
        return { k: "bol" };
      case "$":
        return { k: "eol" };
      case "\\":
        return { k: "set", set: this.escape(false) };
      case ")":
      case "*":
      case "+":
      case "?":
        throw new PatternError(`unexpected "${c}" at ${this.i - 1}`);
      default:
        return { k: "set", set: this.literal(c.codePointAt(0) as number) };
    }
  }

  private literal(code: number): CharSet {
    return code < ALPHABET ? range(code, code) : new Uint8Array(ALPHABET);
  }

  /** After a backslash; in a class, `\b` is backspace and class escapes are returned as sets too. */
  private escape(inClass: boolean): CharSet {
    const c = this.src[this.i++];
    if (c === undefined) throw new PatternError("trailing backslash");
    switch (c) {
      case "d": return DIGIT;
      case "D": return negate(DIGIT);
      case "w": return WORD;
      case "W": return negate(WORD);
      case "s": return SPACE;
      case "S": return negate(SPACE);
      case "n": return range(10, 10);
      case "r": return range(13, 13);
      case "t": return range(9, 9);
      case "f": return range(12, 12);
      case "v": return range(11, 11);
      case "0": return range(0, 0);
      case "x":
      case "u": {
        const m = (c === "x" ? /^[0-9a-fA-F]{2}/ : /^[0-9a-fA-F]{4}/).exec(this.src.slice(this.i));
        if (!m) throw new PatternError(`malformed \\${c} escape`);
        this.i += m[0].length;
        return this.literal(parseInt(m[0], 16));
      }
      case "b":
        if (inClass) return range(8, 8);
        throw new PatternError("word boundaries (\\b) are not supported");
      case "B": throw new PatternError("word boundaries (\\B) are not supported");
      case "p":
      case "P": throw new PatternError("Unicode property escapes (\\p) are not supported");
      default:
        if (/[1-9k]/.test(c)) throw new PatternError("backreferences are not supported");
        return this.literal(c.codePointAt(0) as number);
    }
  }

  private charClass(): CharSet {
    const negated = this.src[this.i] === "^";
    if (negated) this.i++;
    const set = new Uint8Array(ALPHABET);
    while (this.src[this.i] !== "]") {
      if (this.i >= this.src.length) throw new PatternError("unclosed character class");
      const lo = this.classAtom();
      if (this.src[this.i] === "-" && this.src[this.i + 1] !== "]" && this.i + 1 < this.src.length && lo.single !== undefined) {
        this.i++;
        const hi = this.classAtom();
        if (hi.single === undefined) throw new PatternError("a class escape as a range end");
        if (hi.single < lo.single) throw new PatternError("a character range out of order");
        range(lo.single, hi.single, set);
      } else for (let c = 0; c < ALPHABET; c++) set[c] |= lo.set[c];
    }
    this.i++;
    return negated ? negate(set) : set;
  }

  private classAtom(): { set: CharSet; single?: number } {
    const c = this.src[this.i++];
    if (c !== "\\") {
      const code = c.codePointAt(0) as number;
      if (code > 0xffff) this.i++;
      return { set: this.literal(code), single: code };
    }
    const before = this.i;
    const set = this.escape(true);
    const members = set.reduce((n, v) => n + v, 0);
    const esc = this.src[before];
    const single = members === 1 && !/[dDwWsS]/.test(esc) ? set.indexOf(1) : undefined;
    // A non-ASCII escaped code point is outside the alphabet but still a range end.
    if (members === 0 && (esc === "u" || esc === "x")) return { set, single: parseInt(this.src.slice(before + 1, this.i), 16) };
    return { set, single };
  }
}

/** NFA under construction: per state, epsilon moves and at most one character-set move. */
class Nfa {
  eps: number[][] = [];
  sets: (CharSet | undefined)[] = [];
  to: number[] = [];

  add(): number {
    if (this.eps.length >= MAX_NFA_STATES) throw new PatternError(`expands to more than ${MAX_NFA_STATES} states`);
    this.eps.push([]);
    this.sets.push(undefined);
    this.to.push(-1);
    return this.eps.length - 1;
  }

  /** Builds `ast` between two new states; returns [start, end]. */
  build(ast: Ast): [number, number] {
    const start = this.add();
    const end = this.add();
    switch (ast.k) {
      case "set":
        this.sets[start] = ast.set;
        this.to[start] = end;
        break;
      case "cat": {
        let at = start;
        for (const part of ast.parts) {
          const [s, e] = this.build(part);
          this.eps[at].push(s);
          at = e;
        }
        this.eps[at].push(end);
        break;
      }
      case "alt":
        for (const option of ast.options) {
          const [s, e] = this.build(option);
          this.eps[start].push(s);
          this.eps[e].push(end);
        }
        break;
      case "rep": {
        let at = start;
        for (let n = 0; n < ast.min; n++) {
          const [s, e] = this.build(ast.body);
          this.eps[at].push(s);
          at = e;
        }
        if (ast.max === Infinity) {
          const [s, e] = this.build(ast.body);
          this.eps[at].push(s, end);
          this.eps[e].push(s, end);
        } else {
          for (let n = ast.min; n < ast.max; n++) {
            const [s, e] = this.build(ast.body);
            this.eps[at].push(s, end);
            at = e;
          }
          this.eps[at].push(end);
        }
        break;
      }
      case "bol":
      case "eol":
        throw new PatternError("^ and $ are supported only at the start and end of the pattern (or of a top-level alternative)");
    }
    return [start, end];
  }
}

/** Compiles a `pattern` to a DFA with search semantics. @throws PatternError */
export function compilePattern(source: string): Dfa {
  const ast = new Parser(source).parse();
  const options = ast.k === "alt" ? ast.options : [ast];
  const anchored: Ast[] = options.map((option) => {
    const parts = option.k === "cat" ? option.parts.slice() : [option];
    const bol = parts[0]?.k === "bol";
    if (bol) parts.shift();
    const eol = parts[parts.length - 1]?.k === "eol";
    if (eol) parts.pop();
    const anyRun: Ast = { k: "rep", body: { k: "set", set: ANY }, min: 0, max: Infinity };
    return { k: "cat", parts: [...(bol ? [] : [anyRun]), ...parts, ...(eol ? [] : [anyRun])] };
  });
  return dfaOf({ k: "alt", options: anchored });
}

/** A DFA that accepts exactly the given regex source, fully anchored (used for `format`). */
export function compileAnchored(source: string): Dfa {
  return compilePattern(`^(?:${source})$`);
}

/** The DFA of strings both accept (a `pattern` next to a `format`, as Zod writes them). @throws PatternError */
export function intersectDfas(a: Dfa, b: Dfa): Dfa {
  const ids = new Map<number, number>();
  const pairs: [number, number][] = [];
  const intern = (x: number, y: number): number => {
    const key = x * b.size + y;
    let id = ids.get(key);
    if (id === undefined) {
      if (pairs.length >= MAX_DFA_STATES) throw new PatternError(`with the format needs more than ${MAX_DFA_STATES} automaton states`);
      id = pairs.length;
      ids.set(key, id);
      pairs.push([x, y]);
    }
    return id;
  };
  intern(0, 0);
  const transitions: number[] = [];
  for (let d = 0; d < pairs.length; d++) {
    const [x, y] = pairs[d];
    for (let c = 0; c < ALPHABET; c++) {
      const tx = a.next[x * ALPHABET + c];
      const ty = b.next[y * ALPHABET + c];
      transitions[d * ALPHABET + c] = tx >= 0 && ty >= 0 ? intern(tx, ty) : -1;
    }
  }
  return finish(Int32Array.from(transitions), Uint8Array.from(pairs, ([x, y]) => a.accept[x] & b.accept[y]));
}

function dfaOf(ast: Ast): Dfa {
  const nfa = new Nfa();
  const [start, end] = nfa.build(ast);
  const closure = (states: number[]): number[] => {
    const seen = new Set(states);
    const work = states.slice();
    while (work.length) for (const t of nfa.eps[work.pop() as number]) if (!seen.has(t)) (seen.add(t), work.push(t));
    return [...seen].sort((a, b) => a - b);
  };
  const ids = new Map<string, number>();
  const members: number[][] = [];
  const transitions: number[] = [];
  const intern = (set: number[]): number => {
    const key = set.join(",");
    let id = ids.get(key);
    if (id === undefined) {
      if (members.length >= MAX_DFA_STATES) throw new PatternError(`needs more than ${MAX_DFA_STATES} automaton states`);
      id = members.length;
      ids.set(key, id);
      members.push(set);
    }
    return id;
  };
  intern(closure([start]));
  for (let d = 0; d < members.length; d++) {
    for (let c = 0; c < ALPHABET; c++) {
      if (charWeight(c) === Infinity) {
        transitions[d * ALPHABET + c] = -1;
        continue;
      }
      const moved: number[] = [];
      for (const s of members[d]) if (nfa.sets[s]?.[c]) moved.push(nfa.to[s]);
      transitions[d * ALPHABET + c] = moved.length ? intern(closure(moved)) : -1;
    }
  }
  return finish(Int32Array.from(transitions), Uint8Array.from(members, (m) => (m.includes(end) ? 1 : 0)));
}

/** Adds the successor lists and the distances to acceptance. */
function finish(next: Int32Array, accept: Uint8Array): Dfa {
  const size = accept.length;
  const edges = Array.from({ length: size }, (_, d) => {
    const best = new Map<number, number>();
    for (let c = 0; c < ALPHABET; c++) {
      const t = next[d * ALPHABET + c];
      if (t >= 0) best.set(t, Math.min(best.get(t) ?? Infinity, charWeight(c)));
    }
    return [...best].map(([to, weight]) => ({ to, weight }));
  });
  // Distances to acceptance: Bellman-Ford style relaxation (weights are 1 or 2, graphs small).
  const dist = new Float64Array(size).fill(Infinity);
  for (let d = 0; d < size; d++) if (accept[d]) dist[d] = 0;
  for (let changed = true; changed; ) {
    changed = false;
    for (let d = 0; d < size; d++) {
      for (const e of edges[d]) {
        if (e.weight + dist[e.to] < dist[d]) {
          dist[d] = e.weight + dist[e.to];
          changed = true;
        }
      }
    }
  }
  return { next, accept, dist, edges, size };
}
