/**
 * A Python reference computed once and cached in the test cache, keyed by the script, its input
 * and the Python tool versions: a version bump, an edited script or changed model files regenerate it.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pythonScripts, runPython, testCacheDir } from "./python.js";

/** Hash of the files of a model or tokenizer directory that a reference reads (missing ones count as absent). */
export function hashFiles(dir: string, names: readonly string[]): string {
  const hash = createHash("sha256");
  for (const name of names) {
    const path = join(dir, name);
    hash.update(`${name}\0`);
    if (existsSync(path)) hash.update(readFileSync(path));
    hash.update("\0");
  }
  return hash.digest("hex");
}

/**
 * Runs `script SPEC_JSON OUT_JSON` unless its output for this key is cached; returns the parsed output.
 * @param folder the cache folder (under the test cache root).
 * @param spec what the script is given (written as its first argument).
 * @param keyParts everything else the output depends on (versions, file hashes).
 */
export function cachedReference<T>(folder: string, script: string, spec: unknown, keyParts: readonly string[]): T {
  const key = createHash("sha256")
    .update(readFileSync(join(pythonScripts, script)))
    .update(JSON.stringify(spec))
    .update(keyParts.join("\0"))
    .digest("hex")
    .slice(0, 16);
  const dir = testCacheDir(folder);
  const out = join(dir, `${key}.json`);
  if (!existsSync(out)) {
    const specPath = join(dir, `${key}.spec.json`);
    writeFileSync(specPath, JSON.stringify(spec));
    runPython(script, [specPath, `${out}.tmp`]);
    renameSync(`${out}.tmp`, out);
  }
  return JSON.parse(readFileSync(out, "utf8")) as T;
}
