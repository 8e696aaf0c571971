/**
 * Token-level constraint: which token ids keep the output a valid prefix of a document, with
 * room to finish it within the tokens left.
 *
 * The vocabulary's decoded bytes form a trie; the allowed set of an automaton state is found by
 * walking that trie from the state and pruning every branch the automaton rejects. The result
 * depends only on the state (states are finite, see automaton.ts), so it is computed once per
 * state and kept: each token with the cost (bytes of shortest completion) of the state it leads
 * to, sorted by that cost, plus the full bitmask. A step then costs a lookup, except near the
 * end of the budget, when the bitmask is rebuilt from the cheap-enough prefix of the list.
 *
 * Budget rule: with `remaining` tokens left after the one being chosen, a token is allowed only
 * if its state's completion needs at most `remaining` bytes. Every byte has a single-byte token
 * (checked when building), so the cheapest continuation always fits and the document is always
 * complete when the budget ends.
 */
import { TokenizerError } from "../errors.js";
import { JsonAutomaton, REJECT, type StateId } from "./automaton.js";
import { literalBytes, type CompiledJsonSchema } from "./nodes.js";
import type { TokenVocabulary } from "./vocab.js";

/** A trie of the vocabulary's token bytes, in flat arrays (built once per vocabulary). */
interface VocabularyTrie {
  /** Per node: first child, next sibling (-1: none), the byte leading to it. */
  firstChild: Int32Array;
  nextSibling: Int32Array;
  label: Uint8Array;
  /** Tokens ending at node n: tokenIds[tokenStart[n] … tokenStart[n + 1]). */
  tokenStart: Int32Array;
  tokenIds: Int32Array;
  /** The token that is exactly this one byte, or -1. */
  singleByte: Int32Array;
}

/** What a state allows, computed once. */
interface StateMasks {
  /** Allowed tokens sorted by the cost of the state they lead to, with those costs. */
  tokens: Int32Array;
  costs: Int32Array;
  /** Bitmask of every allowed token (EOS included when the document may end here). */
  full: Uint32Array;
}

const tries = new WeakMap<TokenVocabulary, VocabularyTrie>();

function vocabularyTrie(vocab: TokenVocabulary): VocabularyTrie {
  const cached = tries.get(vocab);
  if (cached) return cached;
  // Build with maps, then flatten: the vocabulary is walked many times, built once.
  const children: Map<number, number>[] = [new Map()];
  const ending: number[][] = [[]];
  const singleByte = new Int32Array(256).fill(-1);
  for (let id = 0; id < vocab.size; id++) {
    const bytes = vocab.bytes[id];
    if (!bytes || bytes.length === 0) continue;
    if (bytes.length === 1 && singleByte[bytes[0]] < 0) singleByte[bytes[0]] = id;
    let node = 0;
    for (const b of bytes) {
      let child = children[node].get(b);
      if (child === undefined) {
        child = children.length;
        children[node].set(b, child);
        children.push(new Map());
        ending.push([]);
      }
      node = child;
    }
    ending[node].push(id);
  }
  const n = children.length;
  const trie: VocabularyTrie = {
    firstChild: new Int32Array(n).fill(-1),
    nextSibling: new Int32Array(n).fill(-1),
    label: new Uint8Array(n),
    tokenStart: new Int32Array(n + 1),
    tokenIds: new Int32Array(ending.reduce((s, e) => s + e.length, 0)),
    singleByte,
  };
  let t = 0;
  for (let node = 0; node < n; node++) {
    trie.tokenStart[node] = t;
    for (const id of ending[node]) trie.tokenIds[t++] = id;
    let previous = -1;
    for (const [b, child] of children[node]) {
      trie.label[child] = b;
      if (previous < 0) trie.firstChild[node] = child;
      else trie.nextSibling[previous] = child;
      previous = child;
    }
  }
  trie.tokenStart[n] = t;
  tries.set(vocab, trie);
  return trie;
}

/**
 * The constraint of one schema over one vocabulary. Shared by every request with that pair
 * (see {@link tokenConstraint}); per-request state is just a {@link StateId}.
 */
export class TokenConstraint {
  readonly automaton: JsonAutomaton;
  readonly vocab: TokenVocabulary;
  private readonly trie: VocabularyTrie;
  private readonly masks = new Map<StateId, StateMasks>();
  private readonly words: number;
  private free: Uint32Array | undefined;

  constructor(schema: CompiledJsonSchema, vocab: TokenVocabulary) {
    this.automaton = new JsonAutomaton(schema);
    this.vocab = vocab;
    this.trie = vocabularyTrie(vocab);
    this.words = Math.ceil(vocab.size / 32);
    this.checkByteCoverage();
  }

  /** The state before any output. */
  get initial(): StateId {
    return this.automaton.initial;
  }

  /** Fewest tokens a document needs (see {@link CompiledJsonSchema.minTokens}). */
  get minTokens(): number {
    return this.automaton.schema.minTokens;
  }

  /** The state after `token`, or REJECT (-1) when the token is not allowed there. */
  advance(state: StateId, token: number): StateId {
    const bytes = this.vocab.bytes[token];
    if (!bytes || bytes.length === 0 || state === REJECT) return REJECT;
    return this.automaton.advance(state, bytes);
  }

  /** True when the document is complete and nothing may follow: generation should end now. */
  finished(state: StateId): boolean {
    return this.automaton.finished(state);
  }

  /**
   * Bitmask (bit i of word i >> 5: token i allowed) of the tokens allowed next when `remaining`
   * tokens may follow this one. The returned array may be shared: do not modify it.
   */
  mask(state: StateId, remaining: number): Uint32Array {
    const m = this.stateMasks(state);
    const n = m.tokens.length;
    if (n === 0 || m.costs[n - 1] <= remaining) return m.full;
    const out = new Uint32Array(this.words);
    for (let i = 0; i < n && m.costs[i] <= remaining; i++) out[m.tokens[i] >>> 5] |= 1 << (m.tokens[i] & 31);
    if (this.automaton.cost(state) === 0) for (const id of this.vocab.eosIds) out[id >>> 5] |= 1 << (id & 31);
    return out;
  }

  /** Every token allowed (the free stretches of a lazy constraint); shared, do not modify. */
  freeMask(): Uint32Array {
    this.free ??= new Uint32Array(this.words).fill(0xffffffff);
    return this.free;
  }

  /** Whether every valid token of `state` leaves room to finish within `remaining` tokens. */
  fits(state: StateId, remaining: number): boolean {
    const m = this.stateMasks(state);
    return m.tokens.length === 0 || m.costs[m.tokens.length - 1] <= remaining;
  }

  /**
   * The shortest completion of `state` in as few tokens as greedy longest match gives (every
   * token a valid step, since each spells a prefix of a valid completion).
   */
  completionTokens(state: StateId): number[] {
    const bytes = this.automaton.shortestCompletion(state);
    const { firstChild, nextSibling, label, tokenStart, tokenIds } = this.trie;
    const out: number[] = [];
    for (let i = 0; i < bytes.length; ) {
      let node = 0;
      let best = -1;
      let bestLength = 0;
      for (let j = i; j < bytes.length; j++) {
        let child = firstChild[node];
        while (child >= 0 && label[child] !== bytes[j]) child = nextSibling[child];
        if (child < 0) break;
        node = child;
        if (tokenStart[node] < tokenStart[node + 1]) {
          best = tokenIds[tokenStart[node]];
          bestLength = j - i + 1;
        }
      }
      if (best < 0) throw new TokenizerError("jsonSchema: a completion byte has no token (bug: checkByteCoverage passed)");
      out.push(best);
      i += bestLength;
    }
    return out;
  }

  private stateMasks(state: StateId): StateMasks {
    let m = this.masks.get(state);
    if (!m) {
      m = this.computeMasks(state);
      this.masks.set(state, m);
    }
    return m;
  }

  /** Walks the vocabulary trie from `state`, skipping every subtree the automaton rejects. */
  private computeMasks(state: StateId): StateMasks {
    const { firstChild, nextSibling, label, tokenStart, tokenIds } = this.trie;
    const automaton = this.automaton;
    const found: number[] = [];
    const foundCost: number[] = [];
    const nodes: number[] = [0];
    const states: number[] = [state];
    while (nodes.length > 0) {
      const node = nodes.pop() as number;
      const s = states.pop() as number;
      for (let child = firstChild[node]; child >= 0; child = nextSibling[child]) {
        const next = automaton.next(s, label[child]);
        if (next === REJECT) continue;
        const cost = automaton.cost(next);
        for (let t = tokenStart[child]; t < tokenStart[child + 1]; t++) {
          found.push(tokenIds[t]);
          foundCost.push(cost);
        }
        if (firstChild[child] >= 0) {
          nodes.push(child);
          states.push(next);
        }
      }
    }
    const order = found.map((_, i) => i).sort((a, b) => foundCost[a] - foundCost[b]);
    const tokens = Int32Array.from(order, (i) => found[i]);
    const costs = Int32Array.from(order, (i) => foundCost[i]);
    if (automaton.cost(state) > 0 && !(costs[0] < automaton.cost(state))) {
      // checkByteCoverage makes this unreachable for the bytes it knows about.
      throw new TokenizerError("jsonSchema: no token of this vocabulary brings the document closer to its end");
    }
    const full = new Uint32Array(this.words);
    for (const id of tokens) full[id >>> 5] |= 1 << (id & 31);
    if (automaton.cost(state) === 0) for (const id of this.vocab.eosIds) full[id >>> 5] |= 1 << (id & 31);
    return { tokens, costs, full };
  }

  /**
   * The budget rule needs a one-byte token for every byte a shortest completion may use:
   * printable ASCII (structure, digits, string and pattern characters), the literals and keys of
   * the schema, and UTF-8 continuation bytes.
   */
  private checkByteCoverage(): void {
    const schema = this.automaton.schema;
    const needed = literalBytes(schema.root);
    for (const b of [...(schema.prefix ?? []), ...(schema.suffix ?? [])]) needed.add(b);
    for (let b = 0x20; b < 0x7f; b++) needed.add(b);
    for (let b = 0x80; b < 0xc0; b++) needed.add(b);
    const missing = [...needed].filter((b) => this.trie.singleByte[b] < 0);
    if (missing.length > 0) {
      const shown = missing.slice(0, 8).map((b) => `0x${b.toString(16).padStart(2, "0")}`).join(", ");
      throw new TokenizerError(`jsonSchema needs a single-byte token for every byte; this vocabulary has none for ${shown}`);
    }
  }
}

const MAX_CACHED_SCHEMAS = 16;
const constraints = new WeakMap<TokenVocabulary, Map<string, TokenConstraint>>();

/**
 * The cached constraint of (schema, vocabulary): built once, then shared. Keeps the 16 most
 * recently used schemas per vocabulary.
 */
export function tokenConstraint(schema: CompiledJsonSchema, vocab: TokenVocabulary): TokenConstraint {
  let bySchema = constraints.get(vocab);
  if (!bySchema) constraints.set(vocab, (bySchema = new Map()));
  const key = schema.key;
  let c = bySchema.get(key);
  if (c) {
    bySchema.delete(key); // re-insert: Map order is the LRU order
  } else {
    c = new TokenConstraint(schema, vocab);
    if (bySchema.size >= MAX_CACHED_SCHEMAS) bySchema.delete(bySchema.keys().next().value as string);
  }
  bySchema.set(key, c);
  return c;
}
