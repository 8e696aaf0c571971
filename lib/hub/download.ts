/**
 * One blob into the cache, safely: written to `blobs/<etag>.incomplete` (the name huggingface_hub
 * uses, so either tool resumes the other's partial file), resumed with `Range` after an interruption,
 * checked against the hub's checksum, then renamed to `blobs/<etag>`. A file under its final name is
 * therefore always complete and verified. A lock file keeps two processes from writing the same blob.
 */
import { createHash, type Hash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, open, readFile, rename, rm, stat, utimes } from "node:fs/promises";
import { hostname } from "node:os";
import { dirname, join } from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { DownloadError, MlxNodeError } from "../errors.js";
import type { HubSettings } from "./cache.js";
import { authHeaders, fileUrl, HubUnreachableError, responseError, type RepoFile } from "./client.js";

export interface BlobJob {
  /** `<cache>/models--owner--name`. */
  dir: string;
  /** `.locks/models--owner--name` beside the repositories, as huggingface_hub keeps its locks. */
  lockDir: string;
  repo: string;
  commit: string;
  file: RepoFile;
}

export interface BlobOptions {
  settings: HubSettings;
  signal?: AbortSignal;
  /** Attempts after an interrupted transfer, each resuming where the last stopped. */
  retries: number;
  /** A transfer that receives nothing for this long counts as interrupted (a silently dead connection). */
  stallTimeoutMs: number;
  /** Bytes of this file present so far (called with the partial size at the start, then per chunk). */
  onBytes: (done: number) => void;
}

const LOCK_HEARTBEAT_MS = 5_000;
/** A lock not refreshed for this long belongs to a process that died (on any host). */
const LOCK_STALE_MS = 30_000;

const exists = (path: string) => stat(path).then(() => true, () => false);

/**
 * Makes `blobs/<etag>` exist and match the hub's checksum.
 * @returns bytes transferred over the network by this call (0 when the blob was cached or another process fetched it)
 * @throws DownloadError when the transfer keeps failing or the file does not match its checksum
 */
export async function ensureBlob(job: BlobJob, options: BlobOptions): Promise<number> {
  const blob = join(job.dir, "blobs", job.file.etag);
  if (await exists(blob)) {
    options.onBytes(job.file.size);
    return 0;
  }
  await mkdir(dirname(blob), { recursive: true });
  const lock = join(job.lockDir, `${job.file.etag}.mlx-node.lock`);
  // undefined: another process fetched the blob while we waited for its lock.
  const transferred = await withLock(lock, options.signal, () => exists(blob), async () =>
    (await exists(blob)) ? 0 : transferWithRetries(job, blob, options),
  );
  options.onBytes(job.file.size);
  return transferred ?? 0;
}

async function transferWithRetries(job: BlobJob, blob: string, options: BlobOptions): Promise<number> {
  const partial = `${blob}.incomplete`;
  const checksum = new Checksum(job.file.etag, job.file.size);
  let transferred = 0;
  for (let attempt = 0; ; attempt++) {
    try {
      transferred += await transfer(job, partial, checksum, options);
      break;
    } catch (error) {
      if (options.signal?.aborted) throw options.signal.reason;
      // Only a broken transfer is worth repeating; an HTTP refusal or a bad checksum will not change.
      if (!(error instanceof TransferInterrupted || error instanceof HubUnreachableError)) throw error;
      const have = (await stat(partial).catch(() => undefined))?.size ?? 0;
      if (attempt >= options.retries) {
        throw new DownloadError(
          `Download of ${job.repo}/${job.file.path} was interrupted at ${have} of ${job.file.size} bytes ` +
            `(${(error as Error).message}); run it again to resume from there`,
          { cause: error },
        );
      }
      await sleep(250 * 2 ** attempt, undefined, { signal: options.signal }).catch(() => {
        throw options.signal!.reason;
      });
    }
  }
  await verify(job, partial, checksum);
  await rename(partial, blob);
  return transferred;
}

class TransferInterrupted extends Error {}

/** One HTTP request: appends to the partial file from where it ends, hashing as it goes. Returns the bytes received. */
async function transfer(job: BlobJob, partial: string, checksum: Checksum, options: BlobOptions): Promise<number> {
  const { size } = job.file;
  let start = (await stat(partial).catch(() => undefined))?.size ?? 0;
  if (start > size) {
    await rm(partial, { force: true });
    start = 0;
  }
  options.onBytes(start);
  if (start === size) return 0;
  const url = fileUrl(options.settings, job.repo, job.commit, job.file.path);
  const target = { repo: job.repo, revision: job.commit, file: job.file.path };
  // A stalled connection is aborted by its own controller, so it is retried rather than waited on forever.
  const stall = new AbortController();
  let stallTimer = setTimeout(() => stall.abort(), options.stallTimeoutMs);
  const signal = options.signal ? AbortSignal.any([options.signal, stall.signal]) : stall.signal;
  const interrupted = (error: unknown) => {
    if (options.signal?.aborted) return options.signal.reason as Error;
    if (error instanceof MlxNodeError || error instanceof TransferInterrupted) return error;
    if (stall.signal.aborted) return new TransferInterrupted(`no data for ${options.stallTimeoutMs} ms`);
    return new TransferInterrupted((error as { cause?: Error }).cause?.message ?? (error as Error).message);
  };
  let done = start;
  try {
    // Redirects to the CDN are followed; fetch drops the Authorization header when the origin changes.
    const response = await fetch(url, {
      headers: { ...authHeaders(options.settings), "Accept-Encoding": "identity", ...(start > 0 ? { Range: `bytes=${start}-` } : {}) },
      signal,
    });
    // A busy or failing server (429, 5xx) may answer the next attempt; a refusal (401, 403, 404) will not change.
    if (response.status === 429 || response.status >= 500) throw new TransferInterrupted(`HTTP ${response.status}`);
    if (!response.ok) throw await responseError(response, options.settings, target);
    if (start > 0 && response.status !== 206) done = start = 0; // the server ignored Range: start over
    if (!response.body) throw new TransferInterrupted("empty response");
    await checksum.resumeAt(partial, start);
    const count = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        clearTimeout(stallTimer);
        stallTimer = setTimeout(() => stall.abort(), options.stallTimeoutMs);
        done += chunk.length;
        if (done > size) return callback(new DownloadError(`${job.repo}/${job.file.path}: the server sent more than the ${size} bytes the hub lists`));
        checksum.update(chunk);
        options.onBytes(done);
        callback(null, chunk);
      },
    });
    const body = Readable.fromWeb(response.body as import("node:stream/web").ReadableStream);
    await pipeline(body, count, createWriteStream(partial, { flags: start > 0 ? "a" : "w" }), { signal });
  } catch (error) {
    throw interrupted(error);
  } finally {
    clearTimeout(stallTimer);
  }
  if (done < size) throw new TransferInterrupted(`connection closed after ${done} of ${size} bytes`);
  return done - start;
}

/**
 * The hub's checksum of a file, computed as its bytes arrive, so a finished download is not read
 * again: sha256 for LFS files (an etag of 64 hex digits), the git blob id (sha1 of `blob <size>\0`
 * and the content) for regular files (40 hex digits); other etags are checked by size only.
 */
class Checksum {
  private hash: Hash | undefined;
  /** Bytes the running hash covers. */
  private bytes = 0;
  constructor(readonly etag: string, private readonly size: number) {}

  /** Makes the hash cover exactly the first `start` bytes of `file`, reading them only when it does not already. */
  async resumeAt(file: string, start: number): Promise<void> {
    if (this.hash && this.bytes === start) return;
    this.hash = /^[0-9a-f]{64}$/.test(this.etag) ? createHash("sha256") : /^[0-9a-f]{40}$/.test(this.etag) ? createHash("sha1").update(`blob ${this.size}\0`) : undefined;
    this.bytes = 0;
    if (start > 0) for await (const chunk of createReadStream(file, { end: start - 1 })) this.update(chunk as Buffer);
  }

  update(chunk: Buffer): void {
    this.hash?.update(chunk);
    this.bytes += chunk.length;
  }

  /** The hex digest once the hash covers `size` bytes; undefined for an etag that is no checksum we know. */
  digest(): string | undefined {
    if (this.bytes !== this.size) throw new Error(`checksum covers ${this.bytes} of ${this.size} bytes`);
    return this.hash?.digest("hex");
  }
}

/** Checks the finished partial file against the hub's size and checksum. A mismatch deletes the file. */
async function verify(job: BlobJob, partial: string, checksum: Checksum): Promise<void> {
  const { size, path } = job.file;
  const actualSize = (await stat(partial)).size;
  if (actualSize === size) await checksum.resumeAt(partial, size); // no-op unless the hash fell behind the file
  const actual = actualSize === size ? checksum.digest() : undefined;
  if (actualSize !== size || (actual !== undefined && actual !== checksum.etag)) {
    await rm(partial, { force: true });
    throw new DownloadError(
      `${job.repo}/${path} does not match the hub's checksum ` +
        `(expected ${size} bytes, ${checksum.etag}; got ${actualSize} bytes${actual ? `, ${actual}` : ""}); the file was discarded`,
    );
  }
}

/**
 * Runs `work` while holding an exclusive lock file. While another live process holds it, waits until
 * `ready()` says its work is done (then returns undefined) or the lock is released. The holder
 * refreshes the lock's mtime; a lock left by a dead process (same host, pid gone) or not refreshed
 * for {@link LOCK_STALE_MS} is taken over.
 */
async function withLock<T>(path: string, signal: AbortSignal | undefined, ready: () => Promise<boolean>, work: () => Promise<T>): Promise<T | undefined> {
  await mkdir(dirname(path), { recursive: true });
  for (;;) {
    signal?.throwIfAborted();
    try {
      const handle = await open(path, "wx");
      await handle.writeFile(`${process.pid} ${hostname()}`);
      await handle.close();
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    if (await ready()) return undefined;
    if (await isStale(path)) {
      await rm(path, { force: true });
      continue;
    }
    await sleep(100, undefined, { signal }).catch(() => signal!.throwIfAborted());
  }
  const heartbeat = setInterval(() => {
    const now = new Date();
    utimes(path, now, now).catch(() => {});
  }, LOCK_HEARTBEAT_MS);
  heartbeat.unref();
  try {
    return await work();
  } finally {
    clearInterval(heartbeat);
    await rm(path, { force: true });
  }
}

async function isStale(path: string): Promise<boolean> {
  const [text, info] = await Promise.all([readFile(path, "utf8").catch(() => undefined), stat(path).catch(() => undefined)]);
  if (text === undefined || !info) return false; // released meanwhile: the next open decides
  if (Date.now() - info.mtimeMs > LOCK_STALE_MS) return true;
  const [pid, host] = text.split(" ");
  if (host !== hostname() || !pid) return false;
  try {
    process.kill(Number(pid), 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "ESRCH";
  }
}
