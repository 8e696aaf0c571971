/**
 * Numbers with `minimum`/`maximum`/`exclusiveMinimum`/`exclusiveMaximum` (and `multipleOf` for
 * integers), decided digit by digit. A bounded number is written as an integer part, optionally
 * followed by a fraction (never an exponent): the integer part is tracked exactly (15 digits
 * fit a double), and a fraction is offered only after an integer part I whose whole interval
 * [I, I+1) is inside the bounds, so any fraction digits keep the value valid.
 */

/** Max digits of an integer part / fraction / exponent: keeps every number finite once parsed. */
export const MAX_INT_DIGITS = 15;
export const MAX_FRACTION_DIGITS = 15;
export const MAX_EXPONENT_DIGITS = 2;
const LIMIT = 10 ** MAX_INT_DIGITS - 1;

/** Closed interval of integer-part magnitudes; empty when lo > hi. */
type Interval = readonly [number, number];

/** What a bounded number allows, per sign (index 0: positive, 1: negative). */
export interface NumberBounds {
  /** multipleOf (integers only); 1 when none. */
  multipleOf: number;
  /** Magnitudes I whose value ±I may end the number. */
  end: readonly [Interval, Interval];
  /** Magnitudes I after which a fraction may follow. */
  fraction: readonly [Interval, Interval];
}

export interface NumberLimits {
  minimum: number;
  minimumExclusive: boolean;
  maximum: number;
  maximumExclusive: boolean;
  multipleOf: number;
}

const clamp = (lo: number, hi: number): Interval => [Math.max(lo, 0), Math.min(hi, LIMIT)];

export function numberBounds(l: NumberLimits, integer: boolean): NumberBounds {
  const { minimum: lo, maximum: hi } = l;
  const intLo = l.minimumExclusive ? Math.floor(lo) + 1 : Math.ceil(lo);
  const intHi = l.maximumExclusive ? Math.ceil(hi) - 1 : Math.floor(hi);
  const end: [Interval, Interval] = [clamp(intLo, intHi), clamp(-intHi, -intLo)];
  const none: Interval = [1, 0];
  // Positive I: [I, I+1) inside means I >= lo (> when exclusive) and I+1 <= hi.
  // Negative I: values (-(I+1), -I] inside means -I <= hi (< when exclusive) and -(I+1) >= lo.
  const fraction: [Interval, Interval] = integer
    ? [none, none]
    : [
        clamp(l.minimumExclusive ? Math.floor(lo) + 1 : Math.ceil(lo), Math.floor(hi - 1)),
        clamp(l.maximumExclusive ? Math.floor(-hi) + 1 : Math.ceil(-hi), Math.floor(-lo - 1)),
      ];
  return { multipleOf: l.multipleOf, end, fraction };
}

function meets(range: Interval, a: number, z: number, m: number): boolean {
  const lo = Math.max(a, range[0]);
  const hi = Math.min(z, range[1]);
  return lo <= hi && Math.ceil(lo / m) * m <= hi;
}

/** Whether the integer part `p` (magnitude) may end the number. */
export function endAllowed(b: NumberBounds, negative: boolean, p: number): boolean {
  return meets(b.end[negative ? 1 : 0], p, p, b.multipleOf);
}

/** Whether a fraction may follow the integer part `p`. */
export function fractionAllowed(b: NumberBounds, negative: boolean, p: number): boolean {
  return meets(b.fraction[negative ? 1 : 0], p, p, 1);
}

/**
 * Bytes still needed after an integer part `p` of `digits` digits (0 digits: only the sign, if
 * any, was written). Infinity when no valid number starts this way.
 */
export function boundedCost(b: NumberBounds, negative: boolean, p: number, digits: number): number {
  if (digits === 0) {
    let best = Infinity;
    for (let f = 0; f <= 9; f++) best = Math.min(best, 1 + boundedCost(b, negative, f, 1));
    return best;
  }
  const s = negative ? 1 : 0;
  const maxK = p === 0 ? 0 : MAX_INT_DIGITS - digits; // no digit may follow a leading zero
  let best = Infinity;
  for (let k = 0, scale = 1; k <= maxK && k < best; k++, scale *= 10) {
    const a = p * scale;
    const z = a + scale - 1;
    if (meets(b.end[s], a, z, b.multipleOf)) best = Math.min(best, k);
    if (meets(b.fraction[s], a, z, 1)) best = Math.min(best, k + 2);
  }
  return best;
}
