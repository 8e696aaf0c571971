/** Numeric command-line flags: undefined when absent, an InvalidOptionError naming the flag when malformed. */
import { InvalidOptionError } from "../errors.js";

/** A finite number. */
export function numberFlag(flag: string, value: string | undefined): number | undefined {
  return parse(flag, value, Number.isFinite, "a number");
}

/** An integer. */
export function integerFlag(flag: string, value: string | undefined): number | undefined {
  return parse(flag, value, Number.isInteger, "an integer");
}

function parse(flag: string, value: string | undefined, valid: (n: number) => boolean, expected: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !valid(n)) throw new InvalidOptionError(flag, expected, value);
  return n;
}
