/**
 * The Hugging Face cache, shared with huggingface_hub, mlx-lm and huggingface-cli:
 * `<cache>/models--owner--name/{blobs/<etag>, snapshots/<commit>/<file> -> ../../blobs/<etag>, refs/<revision>}`.
 * Location and behaviour come from Hugging Face's own environment variables.
 */
import { readFileSync } from "node:fs";
import { copyFile, lstat, mkdir, readFile, readdir, readlink, rename, rm, stat, symlink, unlink, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join, relative } from "node:path";
import { ModelNotFoundError } from "../errors.js";
import { formatModelName, parseModelName } from "./names.js";

/** Where and how to reach the hub. Every field defaults to Hugging Face's environment variables. */
export interface HubOptions {
  /** Cache directory. Defaults to `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`. */
  cacheDir?: string;
  /** Hub URL. Defaults to `HF_ENDPOINT`, else `https://huggingface.co`. */
  endpoint?: string;
  /** Access token for gated or private repositories. Defaults to `HF_TOKEN`, else the token file `huggingface-cli login` writes. */
  token?: string;
  /** Use the cache only, never the network. Defaults to `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`): 1, true, yes, on. */
  offline?: boolean;
}

export type HubSettings = Required<Omit<HubOptions, "token">> & { token?: string };

const TRUE = new Set(["1", "true", "yes", "on"]);

/** @huggingface/hub, loaded on first use: its import takes time that loading a local path should not pay. */
export const hubLibrary = (): Promise<typeof import("@huggingface/hub")> => import("@huggingface/hub");

/** Options merged over the environment, read at call time so tests and apps can change it. */
export async function hubSettings(options: HubOptions = {}): Promise<HubSettings> {
  const { getHFHubCachePath } = await hubLibrary();
  const env = process.env;
  const hfHome = env.HF_HOME ?? join(env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "huggingface");
  return {
    cacheDir: options.cacheDir ?? getHFHubCachePath(),
    endpoint: (options.endpoint ?? env.HF_ENDPOINT ?? "https://huggingface.co").replace(/\/+$/, ""),
    // As huggingface_hub: an empty variable counts as unset.
    token: options.token ?? (env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN || readTokenFile(env.HF_TOKEN_PATH || join(hfHome, "token"))),
    offline: options.offline ?? TRUE.has((env.HF_HUB_OFFLINE || env.TRANSFORMERS_OFFLINE || "").toLowerCase()),
  };
}

/** The token `huggingface-cli login` saved; synchronous on purpose (a few bytes, once per pull). */
function readTokenFile(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}

/** A repository's folder in the cache (`<cache>/models--owner--name`) and its lock folder (`<cache>/.locks/models--owner--name`, as huggingface_hub keeps them). */
export async function repoPaths(cacheDir: string, repo: string): Promise<{ dir: string; lockDir: string }> {
  const { getRepoFolderName } = await hubLibrary();
  const folder = getRepoFolderName({ name: repo, type: "model" });
  return { dir: join(cacheDir, folder), lockDir: join(cacheDir, ".locks", folder) };
}

/** The commit a branch or tag pointed to when last fetched; a commit hash is its own answer. */
export async function cachedCommit(dir: string, revision: string): Promise<string | undefined> {
  if (/^[0-9a-f]{40}$/.test(revision)) return revision;
  const commit = await readFile(join(dir, "refs", revision), "utf8").catch(() => undefined);
  return commit?.trim() || undefined;
}

/** Records where a branch or tag points. `refs/` is made even for a commit, as cache scanners expect it. */
export async function writeRef(dir: string, revision: string, commit: string): Promise<void> {
  const path = join(dir, "refs", revision);
  await mkdir(dirname(path), { recursive: true });
  if (revision === commit) return;
  // Write then rename, so a reader never sees an empty ref.
  const temp = `${path}.${process.pid}.tmp`;
  await writeFile(temp, commit);
  await rename(temp, path);
}

/** Every file path in a snapshot, relative to it (`a/b.gguf`), following the links to blobs. */
export async function snapshotFiles(snapshot: string): Promise<string[]> {
  const entries = await readdir(snapshot, { recursive: true, withFileTypes: true }).catch(() => []);
  const files: string[] = [];
  for (const entry of entries) {
    // `parentPath` from Node 20.12; `path` before it.
    const full = join(entry.parentPath ?? (entry as { path?: string }).path ?? snapshot, entry.name);
    // A link whose blob is missing does not count: the file is not really cached.
    if ((entry.isFile() || entry.isSymbolicLink()) && (await stat(full).catch(() => undefined))?.isFile()) {
      files.push(relative(snapshot, full).split("\\").join("/"));
    }
  }
  return files;
}

/** Points `snapshots/<commit>/<path>` at `blobs/<etag>` with a relative link, as huggingface_hub does; copies where links are not allowed. */
export async function linkSnapshotFile(dir: string, commit: string, path: string, etag: string): Promise<string> {
  const pointer = join(dir, "snapshots", commit, ...path.split("/"));
  const blob = join(dir, "blobs", etag);
  await mkdir(dirname(pointer), { recursive: true });
  const target = relative(dirname(pointer), blob);
  const existing = await readlink(pointer).catch(() => undefined);
  if (existing === target) return pointer;
  if (existing !== undefined || (await lstat(pointer).catch(() => undefined))) await unlink(pointer);
  try {
    await symlink(target, pointer);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EEXIST") return pointer; // another process linked it at the same moment
    if (code !== "EPERM" && code !== "ENOTSUP") throw error;
    await copyFile(blob, pointer);
  }
  return pointer;
}

/** A model in the cache, as `mlx-node ls` shows it. */
export interface CachedModel {
  /** `owner/name`. */
  repo: string;
  /** The name that loads it (with `@revision` when not `main`). */
  name: string;
  /** Branches and tags pointing at this snapshot (`main`, …). */
  refs: string[];
  commit: string;
  /** `mlx` (safetensors directory), `gguf`, or `incomplete` when no model files are present. */
  format: "mlx" | "gguf" | "incomplete";
  /** GGUF files in the snapshot. */
  ggufFiles: string[];
  /** Bytes on disk of this snapshot's files. */
  sizeOnDisk: number;
  path: string;
  lastModified: Date;
}

/** Lists the models in the cache (every cached snapshot of every model repository). */
export async function listCachedModels(options: Pick<HubOptions, "cacheDir"> = {}): Promise<CachedModel[]> {
  const { cacheDir } = await hubSettings(options);
  if (!(await stat(cacheDir).catch(() => undefined))?.isDirectory()) return [];
  const scan = await (await hubLibrary()).scanCacheDir(cacheDir);
  const models: CachedModel[] = [];
  for (const repo of scan.repos) {
    if (repo.id.type !== "model") continue;
    for (const revision of repo.revisions) {
      const files = await snapshotFiles(revision.path);
      const ggufFiles = files.filter((f) => f.toLowerCase().endsWith(".gguf"));
      const isDir = files.includes("config.json") && files.some((f) => f.endsWith(".safetensors"));
      const ref = revision.refs.includes("main") ? "main" : revision.refs[0] ?? revision.commitOid;
      // A GGUF repository may hold several models; the name that loads this one names its file.
      const file = !isDir && ggufFiles.length === 1 ? ggufFiles[0] : undefined;
      models.push({
        repo: repo.id.name,
        name: formatModelName({ repo: repo.id.name, revision: ref, ...(file ? { file } : {}) }),
        refs: revision.refs,
        commit: revision.commitOid,
        format: isDir ? "mlx" : ggufFiles.length > 0 ? "gguf" : "incomplete",
        ggufFiles,
        sizeOnDisk: revision.size,
        path: revision.path,
        lastModified: revision.lastModifiedAt,
      });
    }
  }
  return models.sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * Removes a model repository from the cache: every snapshot, ref and blob of `owner/name`
 * (what `huggingface-cli delete-cache` does for one repository).
 * @returns bytes freed
 * @throws ModelNotFoundError when the name is not a hub name or the repository is not cached
 */
export async function removeCachedModel(name: string, options: Pick<HubOptions, "cacheDir"> = {}): Promise<number> {
  const parsed = parseModelName(name);
  if (!parsed) throw new ModelNotFoundError(name, "not a Hugging Face model name (owner/name)");
  const { cacheDir } = await hubSettings(options);
  const { dir, lockDir } = await repoPaths(cacheDir, parsed.repo);
  if (!(await stat(dir).catch(() => undefined))) throw new ModelNotFoundError(parsed.repo, `not in the cache at ${cacheDir}`);
  const blobs = await readdir(join(dir, "blobs")).catch(() => []);
  let freed = 0;
  for (const blob of blobs) freed += (await stat(join(dir, "blobs", blob)).catch(() => undefined))?.size ?? 0;
  await rm(dir, { recursive: true, force: true });
  await rm(lockDir, { recursive: true, force: true });
  return freed;
}
