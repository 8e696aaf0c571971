/**
 * The command line's exit codes, one definition for every command (documented in the README and in
 * `mlx-node help`), so scripts can tell a wrong command line from a run that failed.
 */
import { MlxNodeError } from "../errors.js";

export const EXIT = {
  /** Done (for `eval`: the pass rate reached the threshold). */
  ok: 0,
  /** The run failed: the model could not be found or loaded, generation failed, the port was taken; `eval` below its threshold. */
  failure: 1,
  /** The command line is wrong: unknown command or flag, a missing or malformed value, an unreadable flag file. Nothing ran. */
  usage: 2,
} as const;

/**
 * The exit code for an error that ended a command. Every option of a command comes from its
 * command line, so an invalid option, whoever detected it (argument parsing or the library), is a
 * usage error.
 */
export function exitCodeOf(error: unknown): number {
  if (error instanceof MlxNodeError && error.code === "INVALID_OPTION") return EXIT.usage;
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS_")) return EXIT.usage;
  return EXIT.failure;
}
