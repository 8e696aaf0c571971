/**
 * Model names on the Hugging Face Hub, in the forms other tools use:
 * `owner/name` (mlx-lm), `hf:owner/name/file.gguf` and `hf:owner/name:Q4_K_M` (node-llama-cpp),
 * each with an optional `@revision` after the repository (`owner/name@v1.0:Q8_0`).
 */

/** A parsed hub model name. */
export interface HubModelName {
  /** `owner/name`. */
  repo: string;
  /** Branch, tag or commit. Defaults to `main`. */
  revision: string;
  /** A GGUF file path in the repository (`hf:owner/name/file.gguf`). */
  file?: string;
  /** A GGUF quantization to pick (`hf:owner/name:Q4_K_M`), matched case-insensitively in file names. */
  quant?: string;
}

const SEGMENT = "[A-Za-z0-9][A-Za-z0-9._-]*";
// Repository, then @revision (no "/" or ":", so it cannot swallow a file or quant), then a file or a quant.
const NAME = new RegExp(`^(${SEGMENT}/${SEGMENT})(?:@([^/:@\\s]+))?(?::([A-Za-z0-9._-]+)|/(\\S+\\.gguf))?$`, "i");

/**
 * Parses `name` as a hub model name; undefined when it is not one (a path such as `./model` or `/x/y`).
 * The caller decides first whether a local path of that name exists: a local path always wins.
 */
export function parseModelName(name: string): HubModelName | undefined {
  const explicit = name.startsWith("hf:");
  const body = explicit ? name.slice(3) : name;
  const match = NAME.exec(body);
  if (!match) return undefined;
  const [, repo, revision, quant, file] = match;
  if (repo!.endsWith(".gguf") || repo!.includes("..")) return undefined;
  if (file !== undefined && file.split("/").some((part) => part === "" || part === "." || part === "..")) return undefined;
  return { repo: repo!, revision: revision ?? "main", ...(file !== undefined ? { file } : {}), ...(quant !== undefined ? { quant } : {}) };
}

/** The canonical spelling of a parsed name (the form `mlx-node ls` prints and `rm` accepts). */
export function formatModelName(name: HubModelName): string {
  const revision = name.revision === "main" ? "" : `@${name.revision}`;
  if (name.file !== undefined) return `hf:${name.repo}${revision}/${name.file}`;
  if (name.quant !== undefined) return `hf:${name.repo}${revision}:${name.quant}`;
  return `${name.repo}${revision}`;
}
