/**
 * The byte-level automaton of a compiled schema: which bytes may extend a prefix of the output,
 * and how many bytes the shortest completion of each prefix needs.
 *
 * A state is a set of parse stacks (frames.ts): one stack while the text can be read only one
 * way, several while alternatives of a union (anyOf, type arrays) are still possible. Recursion
 * is unrolled to a bounded depth when compiling (schema.ts), so stacks are bounded and the
 * reachable states finite (string content, digit counts and key prefixes collapse into a few
 * states each). States are interned as small integers with a lazily filled 256-way transition
 * table per state: after warm-up a step is one array read, which is what the token-level walk
 * over the vocabulary (token-constraint.ts) needs.
 */
import { InvalidOptionError } from "../errors.js";
import type { CompiledJsonSchema } from "./nodes.js";
import { frameKey, stackCost, step, type Frame } from "./frames.js";

/** A state id; -1 means "rejected". */
export type StateId = number;
export const REJECT = -1;
/** Most stacks a state may hold (alternatives of unions read the same way so far). */
const MAX_STACKS = 256;

/**
 * The automaton of one schema. Its only mutable state is the memo tables, filled lazily with
 * answers that never change, so one instance serves every request with the same schema.
 */
export class JsonAutomaton {
  readonly schema: CompiledJsonSchema;
  /** The state before any output. */
  readonly initial: StateId;
  private readonly stacks: Frame[][][] = [];
  private readonly costs: number[] = [];
  private readonly ids = new Map<string, StateId>();
  private readonly transitions: Int32Array[] = [];

  constructor(schema: CompiledJsonSchema) {
    this.schema = schema;
    const stack: Frame[] = [];
    if (schema.suffix?.length) stack.push({ t: "text", bytes: schema.suffix, i: 0, which: "s" });
    stack.push({ t: "value", node: schema.root, space: !schema.prefix?.length });
    if (schema.prefix?.length) stack.push({ t: "text", bytes: schema.prefix, i: 0, which: "p" });
    this.initial = this.intern([stack]);
  }

  /** The state after `byte`, or REJECT. */
  next(state: StateId, byte: number): StateId {
    const row = this.transitions[state];
    let target = row[byte];
    if (target === -2) {
      const out: Frame[][] = [];
      for (const stack of this.stacks[state]) step(stack, byte, out);
      target = this.intern(out);
      row[byte] = target;
    }
    return target;
  }
  /** The state after `bytes`, or REJECT. */
  advance(state: StateId, bytes: Iterable<number>): StateId {
    for (const b of bytes) {
      if (state === REJECT) return REJECT;
      state = this.next(state, b);
    }
    return state;
  }

  /** Bytes of the shortest completion (0: the output so far is a complete document). */
  cost(state: StateId): number {
    return this.costs[state];
  }

  /** True when the document is complete and nothing may follow (not even more digits). */
  finished(state: StateId): boolean {
    const stacks = this.stacks[state];
    return stacks.length === 1 && stacks[0].length === 0;
  }

  /** Whether the bytes form a complete document (for tests). */
  accepts(text: string): boolean {
    const state = this.advance(this.initial, new TextEncoder().encode(text));
    return state !== REJECT && this.cost(state) === 0;
  }

  /** Whether the bytes are a prefix of some valid document (for tests). */
  acceptsPrefix(text: string): boolean {
    return this.advance(this.initial, new TextEncoder().encode(text)) !== REJECT;
  }

  /** The shortest completion of `state` as text (for tests and forced endings). */
  shortestCompletion(state: StateId): Uint8Array {
    const out: number[] = [];
    while (this.cost(state) > 0) {
      const want = this.cost(state) - 1;
      let b = 0;
      while (b < 256 && (this.next(state, b) === REJECT || this.cost(this.next(state, b)) !== want)) b++;
      if (b === 256) throw new Error("json-schema automaton: no byte shortens the completion (bug)");
      out.push(b);
      state = this.next(state, b);
    }
    return Uint8Array.from(out);
  }

  /** The id of a set of stacks, without those that cannot be completed; REJECT when none is left. */
  private intern(candidates: Frame[][]): StateId {
    const byKey = new Map<string, { stack: Frame[]; cost: number }>();
    for (const stack of candidates) {
      const cost = stackCost(stack);
      if (cost < Infinity) byKey.set(stack.map(frameKey).join("|"), { stack, cost });
    }
    if (byKey.size === 0) return REJECT;
    if (byKey.size > MAX_STACKS) {
      throw new InvalidOptionError("jsonSchema", "", undefined, { message: `jsonSchema: more than ${MAX_STACKS} readings of the output are possible at once (anyOf alternatives too alike)` });
    }
    const keys = [...byKey.keys()].sort();
    const key = keys.join("\n");
    let id = this.ids.get(key);
    if (id === undefined) {
      id = this.stacks.length;
      this.ids.set(key, id);
      this.stacks.push(keys.map((k) => byKey.get(k)!.stack));
      this.costs.push(Math.min(...[...byKey.values()].map((v) => v.cost)));
      this.transitions.push(new Int32Array(256).fill(-2));
    }
    return id;
  }
}
