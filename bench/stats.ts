/** Small statistics shared by the benches: medians and spreads of noisy samples. */

/** Median and spread of a series. */
export interface Spread {
  n: number;
  median: number;
  min: number;
  max: number;
  /** Quartiles (linear interpolation); with n < 4 they say little, min–max is what the tables show. */
  q1: number;
  q3: number;
}

function quantile(sorted: readonly number[], q: number): number {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

/** Median, min, max and quartiles of the finite values; undefined when there are none. */
export function summarize(values: readonly (number | undefined)[]): Spread | undefined {
  const v = values.filter((x): x is number => typeof x === "number" && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  return { n: v.length, median: quantile(v, 0.5), min: v[0], max: v[v.length - 1], q1: quantile(v, 0.25), q3: quantile(v, 0.75) };
}

/** Median of the finite values; NaN when there are none. */
export function median(values: readonly number[]): number {
  return summarize(values)?.median ?? Number.NaN;
}
