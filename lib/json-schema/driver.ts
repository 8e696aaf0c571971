/**
 * Follows one constrained generation token by token: the automaton state, the budget, and the
 * mask (or ban list) for the next token. Backends feed it the tokens their engine produced.
 */
import { MlxNodeError } from "../errors.js";
import { REJECT, type StateId } from "./automaton.js";
import type { TokenConstraint } from "./token-constraint.js";

/** The per-request side of a {@link TokenConstraint}. */
export class JsonGenerationDriver {
  readonly constraint: TokenConstraint;
  /** Tokens this request may generate in all (maxTokens, or less when the context is nearly full). */
  readonly budget: number;
  private current: StateId;
  private generated = 0;
  /** Milliseconds spent computing masks (for benchmarks). */
  maskMs = 0;
  /**
   * True once the budget left no slack: every later token had to shorten the completion, so
   * the document was closed by the budget rather than by the model (finish reason "length").
   */
  forced = false;
  /** True when the last mask left out valid tokens for lack of budget (it is then not the state's full mask). */
  tight = false;

  constructor(constraint: TokenConstraint, budget: number) {
    if (budget < constraint.minTokens) {
      throw new MlxNodeError("INVALID_OPTION", `jsonSchema needs ${constraint.minTokens} tokens but only ${budget} fit`);
    }
    this.constraint = constraint;
    this.budget = budget;
    this.current = constraint.initial;
  }

  /** Index of the next token to generate (= tokens seen so far). */
  get step(): number {
    return this.generated;
  }

  /** The automaton state after the tokens pushed so far. */
  get state(): StateId {
    return this.current;
  }

  /** True when the document is complete and nothing may follow. */
  get finished(): boolean {
    return this.constraint.finished(this.current);
  }

  /**
   * Advances over a token the engine produced.
   * @throws MlxNodeError when the token was not allowed (the engine ignored its mask: a bug).
   */
  push(token: number): void {
    const next = this.constraint.advance(this.current, token);
    if (next === REJECT) {
      throw new MlxNodeError("MLX_ERROR", `jsonSchema: the engine produced token ${token}, which the constraint did not allow at step ${this.generated}`);
    }
    this.current = next;
    this.generated++;
  }

  /** Bitmask of the tokens allowed for the next step, or null when generation must end now. */
  mask(): Uint32Array | null {
    if (this.finished) return null;
    const start = performance.now();
    const remaining = this.budget - this.generated - 1;
    if (this.constraint.automaton.cost(this.current) > remaining) this.forced = true;
    const mask = this.constraint.mask(this.current, remaining);
    this.tight = !this.constraint.fits(this.current, remaining);
    this.maskMs += performance.now() - start;
    return mask;
  }

  /**
   * When no slack is left (the tokens left equal the bytes still needed), the rest of the document
   * is forced: its shortest completion as tokens, which a backend may append without sampling.
   * Undefined while the model still has a choice.
   */
  forcedCompletion(): number[] | undefined {
    const cost = this.constraint.automaton.cost(this.current);
    if (cost === 0 || cost < this.budget - this.generated) return undefined;
    this.forced = true;
    return this.constraint.completionTokens(this.current);
  }
}
