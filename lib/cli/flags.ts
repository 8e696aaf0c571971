/** Command-line flag values: undefined when absent, an InvalidOptionError naming the flag when malformed. */
import { readFile } from "node:fs/promises";
import { InvalidOptionError } from "../errors.js";

/** The text of the file a flag names (`--json-schema`, `--chat-template`). */
export async function fileFlag(flag: string, file: string): Promise<string> {
  return readFile(file, "utf8").catch((error: NodeJS.ErrnoException) => {
    throw new InvalidOptionError(flag, "a readable file", `${file} (${error.code ?? error.message})`);
  });
}

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
