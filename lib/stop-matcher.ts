/**
 * Finds stop strings in streamed text. Text that could be the start of a stop string is held
 * back until it is known not to be one, so a stop string spanning several tokens is never emitted.
 */
export interface StopMatch {
  /** Text that is safe to emit now. */
  emit: string;
  /** The stop string found, if any; nothing after it is emitted. */
  stop?: string;
}

export class StopMatcher {
  private pending = "";
  constructor(private readonly stops: readonly string[]) {}

  /** Adds newly decoded text and returns what can be emitted. */
  push(text: string): StopMatch {
    if (this.stops.length === 0) return { emit: text };
    this.pending += text;
    let first = -1;
    let found: string | undefined;
    for (const stop of this.stops) {
      const at = this.pending.indexOf(stop);
      if (at !== -1 && (first === -1 || at < first)) {
        first = at;
        found = stop;
      }
    }
    if (found !== undefined) {
      const emit = this.pending.slice(0, first);
      this.pending = "";
      return { emit, stop: found };
    }
    const keep = this.longestPartialSuffix();
    const emit = this.pending.slice(0, this.pending.length - keep);
    this.pending = this.pending.slice(this.pending.length - keep);
    return { emit };
  }

  /** Releases held-back text at the end of generation. */
  flush(): string {
    const rest = this.pending;
    this.pending = "";
    return rest;
  }

  /** Length of the longest suffix of `pending` that is a proper prefix of some stop string. */
  private longestPartialSuffix(): number {
    let best = 0;
    for (const stop of this.stops) {
      const max = Math.min(stop.length - 1, this.pending.length);
      for (let n = max; n > best; n--) {
        if (this.pending.endsWith(stop.slice(0, n))) {
          best = n;
          break;
        }
      }
    }
    return best;
  }
}
