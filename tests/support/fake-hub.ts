/**
 * A local Hugging Face Hub for tests: real model files from ../shared/models served over loopback
 * with the endpoints and headers the hub gives and that @huggingface/hub and Python's
 * huggingface_hub read:
 *   GET  /api/models/<repo>/revision/<rev>                 repo info with `sha` and `siblings`
 *   GET  /api/models/<repo>/tree/<rev>[/<dir>]?recursive=  file list: `oid` (git blob id), `size`, `lfs.oid` (sha256)
 *   HEAD|GET /<repo>/resolve/<rev>/<path>                  small files: 200 with `ETag` = git blob id;
 *        LFS files (safetensors, gguf): 302 to a CDN on another origin, with `X-Linked-Etag` (sha256),
 *        `X-Linked-Size`, `X-Repo-Commit`; both honour `Range`
 *   errors carry `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo) as the hub's do.
 * Faults for tests: cut a transfer halfway, answer 5xx once, serve a corrupted byte, slow transfers down.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface FakeRepo {
  /** `owner/name`. */
  id: string;
  /** Path in the repository → local file to serve (or its contents). */
  files: Record<string, string | Buffer>;
  /** Needs `Authorization: Bearer <token>` with the hub's token. */
  gated?: boolean;
  /** Extra branch or tag names that point at the same commit as `main`. */
  tags?: string[];
}

export interface LoggedRequest {
  server: "hub" | "cdn";
  method: string;
  path: string;
  range?: string;
  authorization?: string;
  /** Bytes of file content sent (for transfers). */
  sent: number;
  /** When the request arrived and when its answer ended: its last content byte written, or the response closed (ms since the epoch). */
  at: number;
  end?: number;
}

interface Blob {
  data: Buffer;
  sha256: string;
  gitOid: string;
  lfs: boolean;
}

interface RepoState {
  repo: FakeRepo;
  commit: string;
  files: Map<string, Blob>;
}

export interface FakeHub {
  endpoint: string;
  requests: LoggedRequest[];
  /** Token that opens gated repositories. */
  token: string;
  /** The next `count` transfers of `path` stop after half their bytes, with the connection destroyed. */
  cutHalfway(path: string, count?: number): void;
  /** The next request for `path` on the hub (`resolve`) is answered with this HTTP status. */
  failNext(path: string, status: number): void;
  /** Every transfer of `path` sends one byte changed (the listed checksum stays the true one). */
  corrupt(path: string): void;
  /** Every transfer pauses `ms` before each of its 16 KiB chunks, so downloads overlap and can be aborted. */
  throttle(ms: number): void;
  reset(): void;
  commitOf(repo: string): string;
  /** Requests for repository files (`resolve` on the hub, and the CDN), not API calls. */
  transfers(): LoggedRequest[];
  close(): Promise<void>;
}

const LFS_EXTENSIONS = /\.(safetensors|gguf|bin|model)$/;
const sha = (algorithm: string, ...parts: (string | Buffer)[]) => {
  const hash = createHash(algorithm);
  for (const part of parts) hash.update(part);
  return hash.digest("hex");
};

function makeBlob(path: string, source: string | Buffer): Blob {
  const data = typeof source === "string" ? readFileSync(source) : source;
  const sha256 = sha("sha256", data);
  const lfs = LFS_EXTENSIONS.test(path);
  // An LFS file's git blob is its pointer file; the hub lists that blob's id as `oid`.
  const gitContent = lfs ? Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha256}\nsize ${data.length}\n`) : data;
  return { data, sha256, lfs, gitOid: sha("sha1", `blob ${gitContent.length}\0`, gitContent) };
}

export async function startFakeHub(repos: FakeRepo[]): Promise<FakeHub> {
  const state = new Map<string, RepoState>();
  for (const repo of repos) {
    const files = new Map(Object.entries(repo.files).map(([path, source]) => [path, makeBlob(path, source)]));
    const commit = sha("sha1", repo.id, ...[...files].map(([p, b]) => `${p}:${b.sha256}`));
    state.set(repo.id, { repo, commit, files });
  }
  const token = "hf_test_token_0123456789";
  const requests: LoggedRequest[] = [];
  const cuts = new Map<string, number>();
  const corrupted = new Set<string>();
  let delayMs = 0;
  const failures = new Map<string, number>();

  const log = (server: LoggedRequest["server"], req: IncomingMessage, res: ServerResponse): LoggedRequest => {
    const entry: LoggedRequest = { server, method: req.method ?? "GET", path: decodeURIComponent((req.url ?? "").split("?")[0]!), sent: 0, at: Date.now() };
    res.once("close", () => (entry.end ??= Date.now())); // answered, or the connection dropped
    if (req.headers.range) entry.range = req.headers.range;
    if (req.headers.authorization) entry.authorization = req.headers.authorization;
    requests.push(entry);
    return entry;
  };

  /** Sends `blob` honouring Range, with the configured faults. */
  const sendContent = async (req: IncomingMessage, res: ServerResponse, path: string, blob: Blob, headers: Record<string, string>, entry: LoggedRequest) => {
    let data = blob.data;
    if (corrupted.has(path)) {
      data = Buffer.from(data);
      data[data.length >> 1] ^= 0xff;
    }
    let start = 0;
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
    let status = 200;
    let end = data.length - 1;
    if (range) {
      start = Number(range[1]);
      if (range[2]) end = Math.min(end, Number(range[2]));
      if (start >= data.length) {
        res.writeHead(416, { "Content-Range": `bytes */${data.length}` }).end();
        return;
      }
      status = 206;
      headers["Content-Range"] = `bytes ${start}-${end}/${data.length}`;
    }
    res.writeHead(status, { ...headers, "Accept-Ranges": "bytes", "Content-Length": String(end - start + 1), "Content-Type": "application/octet-stream" });
    if (req.method === "HEAD") return void res.end();
    const cut = (cuts.get(path) ?? 0) > 0;
    if (cut) cuts.set(path, cuts.get(path)! - 1);
    const stopAt = cut ? start + ((end - start + 1) >> 1) : end + 1;
    for (let offset = start; offset < stopAt; offset += 16384) {
      // The pause comes before a chunk, so the last byte is sent when the answer ends, not a pause earlier.
      if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
      if (res.destroyed) return;
      const chunk = data.subarray(offset, Math.min(offset + 16384, stopAt));
      entry.sent += chunk.length;
      if (!res.write(chunk)) await new Promise((r) => res.once("drain", r));
    }
    entry.end = Date.now(); // the last byte is written: the client may already be asking for the next file
    if (cut) {
      // Let the bytes leave, then drop the connection mid-body as a failing network does.
      await new Promise((r) => setTimeout(r, 20));
      res.socket?.destroy();
      return;
    }
    res.end();
  };

  const fail = (res: ServerResponse, status: number, code: string, message: string) => {
    res.writeHead(status, { "Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message });
    res.end(JSON.stringify({ error: message }));
  };
  const json = (res: ServerResponse, body: unknown) => {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify(body));
  };

  /** The repository and commit for a request, or an error answer as the hub gives it. */
  const access = (req: IncomingMessage, res: ServerResponse, id: string, revision: string): RepoState | undefined => {
    const repo = state.get(id);
    const auth = req.headers.authorization;
    if (!repo) {
      // The hub answers 401 to anonymous requests for missing repositories (private ones look the same).
      fail(res, auth ? 404 : 401, "RepoNotFound", "Repository not found");
      return undefined;
    }
    if (repo.repo.gated && auth !== `Bearer ${token}`) {
      fail(res, auth ? 403 : 401, "GatedRepo", `Access to model ${id} is restricted. You must have access to it and be authenticated to access it. Please log in.`);
      return undefined;
    }
    const revisions = ["main", repo.commit, ...(repo.repo.tags ?? [])];
    if (!revisions.includes(revision)) {
      fail(res, 404, "RevisionNotFound", `Invalid rev id: ${revision}`);
      return undefined;
    }
    return repo;
  };

  const cdn = createServer((req, res) => {
    const entry = log("cdn", req, res);
    const match = /^\/lfs\/([^/]+)\/([0-9a-f]{64})$/.exec(entry.path);
    const repo = match && [...state.values()].find((s) => s.repo.id.replace("/", "--") === match[1]);
    const found = repo && [...repo.files].find(([, b]) => b.sha256 === match![2]);
    if (!found) return fail(res, 404, "EntryNotFound", "Entry not found");
    void sendContent(req, res, found[0], found[1], { ETag: `"${found[1].sha256}"` }, entry);
  });

  const hub = createServer((req, res) => {
    const entry = log("hub", req, res);
    const path = entry.path;
    let m = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/(.+)$/.exec(path);
    if (m) {
      const repo = access(req, res, m[1]!, m[2]!);
      if (!repo) return;
      return json(res, {
        _id: sha("sha1", repo.repo.id).slice(0, 24), id: repo.repo.id, modelId: repo.repo.id, sha: repo.commit,
        private: false, gated: repo.repo.gated ? "manual" : false, disabled: false, downloads: 0, likes: 0,
        lastModified: "2026-01-01T00:00:00.000Z", createdAt: "2026-01-01T00:00:00.000Z", tags: [], library_name: "mlx",
        siblings: [...repo.files.keys()].map((rfilename) => ({ rfilename })),
      });
    }
    m = /^\/api\/models\/([^/]+\/[^/]+)\/tree\/([^/]+)(?:\/(.*))?$/.exec(path);
    if (m) {
      const repo = access(req, res, m[1]!, m[2]!);
      if (!repo) return;
      const recursive = new URL(req.url!, "http://x").searchParams.get("recursive")?.toLowerCase() === "true";
      const prefix = m[3] ? `${m[3].replace(/\/$/, "")}/` : "";
      const entries: unknown[] = [];
      const dirs = new Set<string>();
      for (const [file, blob] of repo.files) {
        if (!file.startsWith(prefix)) continue;
        const rest = file.slice(prefix.length);
        if (!recursive && rest.includes("/")) {
          dirs.add(prefix + rest.split("/")[0]);
          continue;
        }
        if (recursive) for (let i = rest.indexOf("/"); i >= 0; i = rest.indexOf("/", i + 1)) dirs.add(prefix + rest.slice(0, i));
        entries.push({
          type: "file", oid: blob.gitOid, size: blob.lfs ? 134 : blob.data.length, path: file,
          ...(blob.lfs ? { lfs: { oid: blob.sha256, size: blob.data.length, pointerSize: 134 } } : {}),
        });
      }
      for (const dir of dirs) entries.push({ type: "directory", oid: sha("sha1", dir), size: 0, path: dir });
      return json(res, entries);
    }
    m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    if (m && (req.method === "GET" || req.method === "HEAD")) {
      const repo = access(req, res, m[1]!, m[2]!);
      if (!repo) return;
      const failure = failures.get(m[3]!);
      if (failure) {
        failures.delete(m[3]!);
        return fail(res, failure, "ServiceUnavailable", "try again later");
      }
      const blob = repo.files.get(m[3]!);
      if (!blob) return fail(res, 404, "EntryNotFound", `${m[3]} does not exist on "${m[2]}"`);
      const common = { "X-Repo-Commit": repo.commit, "Access-Control-Expose-Headers": "X-Repo-Commit,X-Linked-Etag,X-Linked-Size,ETag" };
      if (blob.lfs) {
        const location = `${cdnOrigin}/lfs/${repo.repo.id.replace("/", "--")}/${blob.sha256}`;
        res.writeHead(302, { ...common, Location: location, "X-Linked-Etag": `"${blob.sha256}"`, "X-Linked-Size": String(blob.data.length), ETag: `"${blob.gitOid}"`, "Content-Length": "0" });
        return void res.end();
      }
      return void sendContent(req, res, m[3]!, blob, { ...common, ETag: `"${blob.gitOid}"` }, entry);
    }
    fail(res, 404, "NotFound", `no route for ${req.method} ${path}`);
  });

  const listen = (server: Server) => new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)));
  const cdnOrigin = `http://127.0.0.1:${await listen(cdn)}`;
  const endpoint = `http://127.0.0.1:${await listen(hub)}`;
  return {
    endpoint,
    requests,
    token,
    cutHalfway: (path, count = 1) => void cuts.set(path, count),
    failNext: (path, status) => void failures.set(path, status),
    corrupt: (path) => void corrupted.add(path),
    throttle: (ms) => void (delayMs = ms),
    reset: () => {
      requests.length = 0;
      cuts.clear();
      corrupted.clear();
      failures.clear();
      delayMs = 0;
    },
    commitOf: (id) => state.get(id)!.commit,
    transfers: () => requests.filter((r) => r.server === "cdn" || r.path.includes("/resolve/")),
    close: async () => {
      for (const server of [hub, cdn]) {
        server.closeAllConnections();
        await new Promise((r) => server.close(r));
      }
    },
  };
}
