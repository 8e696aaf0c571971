/**
 * Models by name: `pullModel` fetches what a hub model needs into the shared Hugging Face cache
 * (or finds it there), `resolveModel` turns a name or a local path into the path a backend loads.
 */
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { DownloadError, InvalidOptionError, ModelNotFoundError } from "../errors.js";
import { cachedCommit, hubSettings, linkSnapshotFile, repoPaths, snapshotFiles, writeRef, type HubOptions, type HubSettings } from "./cache.js";
import { HubUnreachableError, listRepoFiles, resolveCommit, type RepoFile } from "./client.js";
import { ensureBlob, type BlobJob } from "./download.js";
import { directoryFiles, SAFETENSORS_INDEX, selectFiles, type Selection } from "./files.js";
import { formatModelName, parseModelName, type HubModelName } from "./names.js";

/** Download progress, reported per chunk. */
export interface PullProgress {
  /** `owner/name`. */
  repo: string;
  /** The file this report is about (path in the repository). */
  file: string;
  /** Bytes of `file` present so far, out of `fileTotal`. */
  fileBytes: number;
  fileTotal: number;
  /** Bytes of every file the model needs present so far (cached ones count as done), out of `total`. */
  bytes: number;
  total: number;
  /** Files complete, out of `filesTotal`. */
  filesDone: number;
  filesTotal: number;
}

/** Options for {@link pullModel} and {@link resolveModel}. */
export interface PullOptions extends HubOptions {
  /** Called as bytes arrive. */
  onProgress?: (progress: PullProgress) => void;
  /** Cancels the download; a partial file stays in the cache and the next pull resumes it. */
  signal?: AbortSignal;
  /** Files downloaded at once. Defaults to 4. */
  concurrency?: number;
  /** Times an interrupted transfer is resumed before giving up. Defaults to 3. */
  retries?: number;
  /** A transfer that receives no data for this long is treated as interrupted (and resumed). Defaults to 60 000 ms. */
  stallTimeoutMs?: number;
}

/** A model in the cache, ready to load. */
export interface PulledModel {
  /** The canonical name (`owner/name`, `hf:owner/name:Q4_K_M`, …). */
  name: string;
  repo: string;
  revision: string;
  commit: string;
  format: "mlx" | "gguf";
  /** What a backend loads: the snapshot directory (MLX) or the GGUF file (its first part when split). */
  path: string;
  /** The model's files, relative to the snapshot. */
  files: string[];
  /** Bytes transferred over the network by this call: 0 when everything was cached. */
  downloadedBytes: number;
  /** Whether the hub was consulted (false offline, or when it could not be reached and the cache had the model). */
  online: boolean;
}

/**
 * Makes a hub model available in the cache and returns where it is. Only the files the model
 * needs are fetched; files already cached (by mlx-node, huggingface_hub, mlx-lm, huggingface-cli)
 * are not fetched again.
 *
 * @example
 * ```ts
 * const model = await pullModel("mlx-community/Qwen3-4B-4bit", {
 *   onProgress: (p) => console.log(`${p.bytes}/${p.total}`),
 * });
 * console.log(model.path);
 * ```
 * @throws InvalidOptionError when `name` is not a hub name
 * @throws ModelNotFoundError when the repository, revision or file does not exist (or offline, is not cached)
 * @throws HubAccessError when the repository is gated or private and `HF_TOKEN` does not give access
 * @throws DownloadError when the hub cannot be reached or a file does not match its checksum
 */
export async function pullModel(name: string, options: PullOptions = {}): Promise<PulledModel> {
  const parsed = parseModelName(name);
  if (!parsed) throw new InvalidOptionError("name", "a Hugging Face model name (owner/name, hf:owner/name/file.gguf, hf:owner/name:QUANT)", name);
  checkLimits(options);
  if (options.onProgress !== undefined && typeof options.onProgress !== "function") throw new InvalidOptionError("onProgress", "a function", options.onProgress);
  const settings = await hubSettings(options);
  const { dir, lockDir } = await repoPaths(settings.cacheDir, parsed.repo);
  if (settings.offline) {
    const cached = await fromCache(parsed, dir);
    if (!cached) {
      throw new ModelNotFoundError(formatModelName(parsed), `HF_HUB_OFFLINE is set and it is not in the cache at ${settings.cacheDir}; pull it with the network first (mlx-node pull ${formatModelName(parsed)})`);
    }
    return cached;
  }
  let commit: string;
  let listing: RepoFile[];
  try {
    commit = await resolveCommit(settings, parsed.repo, parsed.revision, options.signal);
    listing = await listRepoFiles(settings, parsed.repo, commit, options.signal);
  } catch (error) {
    // Like huggingface_hub: with the hub unreachable, a cached copy still serves.
    if (!(error instanceof HubUnreachableError)) throw error;
    const cached = await fromCache(parsed, dir);
    if (!cached) throw error;
    return cached;
  }
  await writeRef(dir, parsed.revision, commit);
  const files = new Map(listing.map((f) => [f.path, f]));
  const where = `${parsed.repo}@${parsed.revision}`;
  let selection = selectFiles([...files.keys()], parsed, where);
  const job = { settings, dir, lockDir, repo: parsed.repo, commit };
  let downloaded = 0;
  if (selection.format === "mlx" && files.has(SAFETENSORS_INDEX)) {
    // The index says which shards hold the weights; it is small, so it is fetched before the total is known.
    downloaded += await fetchAll(job, [files.get(SAFETENSORS_INDEX)!], options, () => {});
    const index = await readIndex(join(dir, "snapshots", commit));
    const shards = directoryFiles([...files.keys()], index);
    const missing = shards.filter((p) => !files.has(p));
    if (missing.length > 0) throw new ModelNotFoundError(where, `${SAFETENSORS_INDEX} names ${missing.join(", ")}, which the repository does not hold`);
    selection = { format: "mlx", files: shards };
  }
  const wanted = selection.files.map((p) => files.get(p)!);
  downloaded += await fetchAll(job, wanted, options, options.onProgress);
  return pulled(parsed, commit, selection, dir, downloaded, true);
}

/**
 * The path a backend should load for `nameOrPath`: the path itself when it exists (a local path
 * always wins), otherwise the hub model it names, pulled into the cache first.
 * @throws as {@link pullModel}; a name that is neither a path nor a hub name is returned unchanged (the loader reports it missing)
 */
export async function resolveModel(nameOrPath: string, options: PullOptions = {}): Promise<{ path: string; pulled?: PulledModel }> {
  if (await stat(nameOrPath).then(() => true, () => false)) return { path: nameOrPath };
  const parsed = parseModelName(nameOrPath);
  if (!parsed) return { path: nameOrPath };
  try {
    const pulled = await pullModel(nameOrPath, options);
    return { path: pulled.path, pulled };
  } catch (error) {
    // `models/foo` may be a mistyped local path rather than a repository: say both were tried.
    if (nameOrPath.startsWith("hf:")) throw error;
    if (error instanceof ModelNotFoundError && error.path === parsed.repo) {
      throw new ModelNotFoundError(nameOrPath, `no such local path, and ${error.detail}`);
    }
    if (error instanceof HubUnreachableError) throw new ModelNotFoundError(nameOrPath, `no such local path, and ${error.message}`);
    throw error;
  }
}

type Job = Omit<BlobJob, "file"> & { settings: HubSettings };

/** Downloads `wanted` with bounded concurrency, links each into the snapshot, reports progress; returns bytes transferred. */
async function fetchAll(job: Job, wanted: RepoFile[], options: PullOptions, onProgress: PullOptions["onProgress"]): Promise<number> {
  const { concurrency, retries, stallTimeoutMs } = checkLimits(options);
  const total = wanted.reduce((sum, f) => sum + f.size, 0);
  const present = new Map<string, number>();
  let bytes = 0;
  let filesDone = 0;
  let transferred = 0;
  const report = (file: RepoFile, done: number) => {
    bytes += done - (present.get(file.path) ?? 0);
    present.set(file.path, done);
    onProgress?.({ repo: job.repo, file: file.path, fileBytes: done, fileTotal: file.size, bytes, total, filesDone, filesTotal: wanted.length });
  };
  const queue = [...wanted];
  let failed = false;
  const worker = async () => {
    // After a failure no new file is started; the ones running finish (they stay cached for the next run).
    for (let file = queue.shift(); file && !failed; file = queue.shift()) {
      const current = file;
      try {
        transferred += await ensureBlob({ ...job, file: current }, { settings: job.settings, signal: options.signal, retries, stallTimeoutMs, onBytes: (done) => {
          if (done !== present.get(current.path)) report(current, done);
        } });
      } catch (error) {
        failed = true;
        throw error;
      }
      await linkSnapshotFile(job.dir, job.commit, current.path, current.etag);
      filesDone++;
      report(current, current.size);
    }
  };
  const workers = Array.from({ length: Math.min(concurrency, wanted.length) }, worker);
  // Let every worker settle before failing, so no transfer keeps running after the caller sees the error.
  const results = await Promise.allSettled(workers);
  const rejected = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (rejected) throw rejected.reason;
  return transferred;
}

/** The download limits, checked before any request is made. */
function checkLimits(options: PullOptions): { concurrency: number; retries: number; stallTimeoutMs: number } {
  const { concurrency = 4, retries = 3, stallTimeoutMs = 60_000 } = options;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new InvalidOptionError("concurrency", "a positive integer", concurrency);
  if (!Number.isInteger(retries) || retries < 0) throw new InvalidOptionError("retries", "a non-negative integer", retries);
  if (typeof stallTimeoutMs !== "number" || !(stallTimeoutMs > 0)) throw new InvalidOptionError("stallTimeoutMs", "a positive number of milliseconds", stallTimeoutMs);
  return { concurrency, retries, stallTimeoutMs };
}

async function readIndex(snapshot: string): Promise<Record<string, string>> {
  const path = join(snapshot, SAFETENSORS_INDEX);
  try {
    const index = JSON.parse(await readFile(path, "utf8")) as { weight_map?: Record<string, string> };
    if (!index.weight_map || typeof index.weight_map !== "object") throw new Error("no weight_map");
    return index.weight_map;
  } catch (error) {
    throw new DownloadError(`${path} is not a safetensors index (${(error as Error).message})`);
  }
}

/** The model from the cache alone, when the revision's snapshot holds every file it needs. */
async function fromCache(parsed: HubModelName, dir: string): Promise<PulledModel | undefined> {
  const commit = await cachedCommit(dir, parsed.revision);
  if (!commit) return undefined;
  const snapshot = join(dir, "snapshots", commit);
  const present = await snapshotFiles(snapshot);
  if (present.length === 0) return undefined;
  let selection: Selection;
  try {
    selection = selectFiles(present, parsed, `${parsed.repo}@${parsed.revision}`);
    if (selection.format === "mlx" && present.includes(SAFETENSORS_INDEX)) {
      selection = { format: "mlx", files: directoryFiles(present, await readIndex(snapshot)) };
    }
  } catch {
    return undefined;
  }
  if (!selection.files.every((f) => present.includes(f))) return undefined;
  return pulled(parsed, commit, selection, dir, 0, false);
}

function pulled(parsed: HubModelName, commit: string, selection: Selection, dir: string, downloadedBytes: number, online: boolean): PulledModel {
  const snapshot = join(dir, "snapshots", commit);
  return {
    name: formatModelName(parsed),
    repo: parsed.repo,
    revision: parsed.revision,
    commit,
    format: selection.format,
    path: selection.format === "gguf" ? join(snapshot, ...selection.primary.split("/")) : snapshot,
    files: selection.files,
    downloadedBytes,
    online,
  };
}
