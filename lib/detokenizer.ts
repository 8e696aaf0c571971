/**
 * Incremental detokenization that never splits a UTF-8 character and keeps the spacing that
 * depends on the previous token (SentencePiece's "▁"). Works over any `decode(ids)` function.
 *
 * Each step decodes a short window twice, with and without the new tokens, and emits the
 * difference; while the window ends in an incomplete character (U+FFFD), nothing is emitted.
 */
/** A tokenizer's decode function, such as `(ids) => tokenizer.decode(ids)`. */
export type DecodeFn = (ids: readonly number[]) => string;

/**
 * Turns generated token ids into text chunks as they arrive. Concatenated, the chunks equal one
 * `decode` of all the ids (after the context); no chunk ends inside a UTF-8 character.
 */
export class StreamingDetokenizer {
  private readonly ids: number[];
  private prefixOffset = 0;
  private readOffset: number;

  /**
   * @param decode the tokenizer's decode function.
   * @param context the last few prompt tokens: they give the first generated token its leading space.
   */
  constructor(private readonly decode: DecodeFn, context: readonly number[] = []) {
    this.ids = [...context];
    this.readOffset = this.ids.length;
  }

  /** Adds generated tokens and returns the text they complete (possibly empty). */
  push(tokens: readonly number[]): string {
    for (const t of tokens) this.ids.push(t);
    const before = this.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const after = this.decode(this.ids.slice(this.prefixOffset));
    if (after.length <= before.length || after.endsWith("\uFFFD") || !after.startsWith(before)) {
      // Incomplete character, or a decoder that rewrote the window: wait for more tokens.
      if (!after.startsWith(before) && !after.endsWith("\uFFFD")) return this.resync(after, before);
      return "";
    }
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return after.slice(before.length);
  }

  /** Text still held back at the end of generation (an incomplete character, rendered as U+FFFD). */
  flush(): string {
    const before = this.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const after = this.decode(this.ids.slice(this.prefixOffset));
    this.prefixOffset = this.readOffset = this.ids.length;
    return after.length > before.length ? after.slice(before.length) : "";
  }

  private resync(after: string, before: string): string {
    let common = 0;
    while (common < before.length && before[common] === after[common]) common++;
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return after.slice(common);
  }
}

/** How many prompt tokens to give a StreamingDetokenizer as context. */
export const DETOKENIZER_CONTEXT = 4;
