/**
 * The byte-level pushdown automaton of a compiled schema: which bytes may extend a prefix of the
 * output, and how many bytes the shortest completion of each prefix needs.
 *
 * Schemas are not recursive, so the stack depth is bounded and the set of reachable states is
 * finite (string content, digit counts and key prefixes collapse into a few states each). States
 * are therefore interned as small integers with a lazily filled 256-way transition table per
 * state: after warm-up a step is one array read, which is what the token-level walk over the
 * vocabulary (token-constraint.ts) needs.
 */
import type { CompiledJsonSchema } from "./schema.js";
import { frameKey, stackCost, step, type Frame, type Utf8Mode } from "./frames.js";

/** A state id; -1 means "rejected". */
export type StateId = number;
export const REJECT = -1;

/** Options of {@link JsonAutomaton}. */
export interface AutomatonOptions {
  /**
   * Strings must be well-formed UTF-8 (no overlong forms, surrogates or code points past
   * U+10FFFF), so the text never decodes to U+FFFD. Defaults to true. `false` accepts what
   * llama.cpp's grammar decoder accepts (the length of a sequence from its lead byte's high
   * bits, then continuation bytes), which the GGUF backend needs to follow llama.cpp's choices.
   */
  strictUtf8?: boolean;
}

/**
 * The automaton of one schema. Its only mutable state is the memo tables, filled lazily with
 * answers that never change, so one instance serves every request with the same schema.
 */
export class JsonAutomaton {
  readonly schema: CompiledJsonSchema;
  /** The state before any output. */
  readonly initial: StateId;
  private readonly stacks: Frame[][] = [];
  private readonly costs: number[] = [];
  private readonly ids = new Map<string, StateId>();
  private readonly transitions: Int32Array[] = [];

  constructor(schema: CompiledJsonSchema, options: AutomatonOptions = {}) {
    this.schema = schema;
    const utf8: Utf8Mode = options.strictUtf8 === false ? "lax" : "strict";
    this.initial = this.intern([{ t: "value", node: schema.root, space: true, utf8 }]);
  }

  /** The state after `byte`, or REJECT. */
  next(state: StateId, byte: number): StateId {
    const row = this.transitions[state];
    let target = row[byte];
    if (target === -2) {
      const stack = step(this.stacks[state], byte);
      target = stack ? this.intern(stack) : REJECT;
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
    return this.stacks[state].length === 0;
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

  private intern(stack: Frame[]): StateId {
    const key = stack.map(frameKey).join("|");
    let id = this.ids.get(key);
    if (id === undefined) {
      id = this.stacks.length;
      this.ids.set(key, id);
      this.stacks.push(stack);
      this.costs.push(stackCost(stack));
      this.transitions.push(new Int32Array(256).fill(-2));
    }
    return id;
  }
}
