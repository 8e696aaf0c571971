// CMAKE_PREFIX_PATH as CMake spells a list: the environment uses the platform's path delimiter.
import { delimiter } from "node:path";

/** The `-DCMAKE_PREFIX_PATH=…` value from the environment, or undefined when it is unset. */
export function cmakePrefixPath(env = process.env) {
  const list = (env.CMAKE_PREFIX_PATH ?? "").split(delimiter).filter(Boolean);
  return list.length > 0 ? list.join(";") : undefined;
}
