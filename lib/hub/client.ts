/**
 * Talking to the hub: the revision's commit and file listing through @huggingface/hub
 * (`api/models/<repo>/revision/<rev>`, `api/models/<repo>/tree/<commit>`), and the file URL
 * (`<repo>/resolve/<commit>/<path>`). Every HTTP failure becomes a typed error naming the
 * repository and what to do about it.
 */
import { DownloadError, HubAccessError, ModelNotFoundError } from "../errors.js";
import { hubLibrary, type HubSettings } from "./cache.js";

/** The hub could not be reached at all (no HTTP answer): the cache may still serve. */
export class HubUnreachableError extends DownloadError {}

/** A file in the repository listing. `etag` names its blob in the cache: sha256 for LFS files, the git blob id otherwise. */
export interface RepoFile {
  path: string;
  size: number;
  etag: string;
}

/** What a request was for, so an error can say which repository, revision or file failed. */
interface Target {
  repo: string;
  revision: string;
  file?: string;
}

export const USER_AGENT = "mlx-node; hf-cache-compatible";

export function authHeaders(settings: HubSettings): Record<string, string> {
  return { "User-Agent": USER_AGENT, ...(settings.token ? { Authorization: `Bearer ${settings.token}` } : {}) };
}

/**
 * `fetch` with the signal, the user agent, and our errors: @huggingface/hub gets this as its `fetch`,
 * so its calls fail with the same typed errors as ours.
 */
export function hubFetch(settings: HubSettings, target: Target, signal?: AbortSignal): typeof fetch {
  return async (input, init) => {
    let response: Response;
    try {
      response = await fetch(input, { ...init, headers: { ...authHeaders(settings), ...(init?.headers as Record<string, string>) }, signal });
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      throw new HubUnreachableError(
        `Cannot reach ${settings.endpoint} for ${target.repo} (${cause?.code ?? cause?.message ?? (error as Error).message}); ` +
          "check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache only",
        { cause: error },
      );
    }
    if (!response.ok) throw await responseError(response, settings, target);
    return response;
  };
}

/** Maps a failed hub answer to an error a user can act on (the hub's `X-Error-Code` says which case it is). */
export async function responseError(response: Response, settings: HubSettings, target: Target): Promise<Error> {
  const code = response.headers.get("x-error-code");
  const detail = (response.headers.get("x-error-message") ?? (await response.text().catch(() => "")).slice(0, 200)).trim();
  const page = `${settings.endpoint}/${target.repo}`;
  const tokenHint = settings.token ? "the token in HF_TOKEN has no access to it" : "set HF_TOKEN to an access token (https://huggingface.co/settings/tokens)";
  if (code === "RevisionNotFound") {
    return new ModelNotFoundError(`${target.repo}@${target.revision}`, `no revision "${target.revision}" in the repository on ${settings.endpoint}`);
  }
  if (code === "EntryNotFound") {
    return new ModelNotFoundError(`${target.repo}/${target.file ?? ""}`, `no such file at revision ${target.revision} on ${settings.endpoint}`);
  }
  if (code === "GatedRepo") {
    return new HubAccessError(target.repo, response.status, `${target.repo} is a gated model: accept its conditions at ${page} while logged in, and ${tokenHint}`);
  }
  if (code === "RepoNotFound" || response.status === 404) {
    return new ModelNotFoundError(target.repo, `no such repository on ${settings.endpoint}; check the name, or if it is private, ${tokenHint}`);
  }
  if (response.status === 401 || response.status === 403) {
    return new HubAccessError(target.repo, response.status, `${settings.endpoint} refused access to ${target.repo} (HTTP ${response.status}): it is private or gated; ${tokenHint}`);
  }
  return new DownloadError(`${settings.endpoint} answered HTTP ${response.status} for ${target.repo}${target.file ? `/${target.file}` : ""}${detail ? `: ${detail}` : ""}`);
}

/** The commit a branch, tag or commit names (`api/models/<repo>/revision/<rev>`, as huggingface_hub's `repo_info`). */
export async function resolveCommit(settings: HubSettings, repo: string, revision: string, signal?: AbortSignal): Promise<string> {
  const { modelInfo } = await hubLibrary();
  const info = await modelInfo({
    name: repo,
    revision,
    hubUrl: settings.endpoint,
    additionalFields: ["sha"],
    fetch: hubFetch(settings, { repo, revision }, signal),
  });
  const sha = (info as { sha?: unknown }).sha;
  if (typeof sha !== "string" || !/^[0-9a-f]{40}$/.test(sha)) throw new DownloadError(`${settings.endpoint} gave no commit for ${repo}@${revision}`);
  return sha;
}

/** Every file of the repository at `commit` (the recursive tree listing), with its size and blob name. */
export async function listRepoFiles(settings: HubSettings, repo: string, commit: string, signal?: AbortSignal): Promise<RepoFile[]> {
  const { listFiles } = await hubLibrary();
  const files: RepoFile[] = [];
  const entries = listFiles({ repo: { type: "model", name: repo }, revision: commit, recursive: true, hubUrl: settings.endpoint, fetch: hubFetch(settings, { repo, revision: commit }, signal) });
  for await (const entry of entries) {
    if (entry.type !== "file") continue;
    const etag = entry.lfs?.oid ?? entry.oid;
    if (!etag) throw new DownloadError(`${settings.endpoint} listed ${repo}/${entry.path} without a checksum`);
    files.push({ path: entry.path, size: entry.lfs?.size ?? entry.size, etag });
  }
  return files;
}

/** `<endpoint>/<repo>/resolve/<commit>/<path>`: the hub answers with the file, or redirects large files to its CDN. */
export function fileUrl(settings: HubSettings, repo: string, commit: string, path: string): string {
  return `${settings.endpoint}/${repo}/resolve/${encodeURIComponent(commit)}/${path.split("/").map(encodeURIComponent).join("/")}`;
}
