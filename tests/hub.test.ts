/**
 * Models by name from the Hugging Face Hub, against a local hub (tests/support/fake-hub.ts) serving
 * real files from ../shared/models over loopback: names, the shared cache layout, downloads that
 * resume, verify and lock, offline mode, errors, the CLI, and interop with Python's huggingface_hub.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  DownloadError, HubAccessError, listCachedModels, loadModel, ModelNotFoundError, parseModelName, pullModel,
  removeCachedModel, type PullProgress,
} from "../lib/index.js";
import { progressReporter } from "../lib/cli/hub.js";
import { directoryFiles, selectFiles } from "../lib/hub/files.js";
import { startFakeHub, type FakeHub, type LoggedRequest } from "./support/fake-hub.js";
import { mlxAvailable } from "./support/mlx.js";
import { python, pythonModules, pythonScripts } from "./support/python.js";

const models = join(import.meta.dirname, "..", "..", "shared", "models");
const stories = join(models, "stories260K");
const cli = join(import.meta.dirname, "..", "dist", "lib", "cli", "main.js");
const MLX_REPO = "mlx-test/stories260K-4bit";
const HF_REPO = "hf-test/stories260K";
const GGUF_REPO = "gguf-test/tiny-GGUF";
const GATED_REPO = "gated-org/stories260K-GGUF";
const GREEDY = /^, there was a little girl named Lily\./;

let hub: FakeHub;
let cacheDir: string;
const scratch = mkdtempSync(join(tmpdir(), "mlx-node-hub-"));

beforeAll(async () => {
  const dir = (sub: string) => Object.fromEntries(readdirSync(join(stories, sub)).map((f) => [f, join(stories, sub, f)]));
  hub = await startFakeHub([
    {
      id: MLX_REPO,
      files: {
        ...dir("mlx-4bit"),
        "README.md": Buffer.from("# stories260K, MLX 4-bit\n"),
        // Not named by the safetensors index, and not at the top level: neither is fetched.
        "consolidated.safetensors": join(stories, "hf-bf16", "model.safetensors"),
        "original/model.safetensors": join(stories, "hf-f32", "model.safetensors"),
      },
    },
    { id: HF_REPO, files: dir("hf-f32"), tags: ["v1.0"] },
    {
      id: GGUF_REPO,
      files: {
        "stories260K-F32.gguf": join(stories, "stories260K.gguf"),
        "llama-2-tiny-random-F16.gguf": join(models, "llama-2-tiny-random", "llama-2-tiny-random.gguf"),
        "README.md": Buffer.from("# tiny GGUF models\n"),
      },
    },
    { id: GATED_REPO, gated: true, files: { "stories260K.gguf": join(stories, "stories260K.gguf") } },
  ]);
});
afterAll(async () => {
  await hub?.close();
  rmSync(scratch, { recursive: true, force: true });
});
beforeEach(() => {
  hub.reset();
  cacheDir = mkdtempSync(join(scratch, "cache-"));
});

const opts = (extra: Record<string, unknown> = {}) => ({ cacheDir, endpoint: hub.endpoint, token: "", offline: false, ...extra });
const repoDir = (repo: string) => join(cacheDir, `models--${repo.replace("/", "--")}`);
const sha256 = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");
/** Repository files requested from the hub (`resolve`), by name. */
const fetchedFiles = () => hub.requests.filter((r) => r.server === "hub" && r.path.includes("/resolve/")).map((r) => r.path.split("/").pop());

/** Where a request's `Range: bytes=N-` starts (-1 without a range). */
const resumedFrom = (r: LoggedRequest) => Number(/^bytes=(\d+)-$/.exec(r.range ?? "")?.[1] ?? -1);

/** Runs the CLI as a child process (asynchronously: the hub answers from this process). */
function run(args: string[], env: Record<string, string> = {}, cwd?: string, started?: (child: ChildProcess) => void): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, ...args], {
      cwd,
      env: { ...process.env, HF_HUB_CACHE: cacheDir, HF_ENDPOINT: hub.endpoint, HF_TOKEN: "", HF_TOKEN_PATH: join(scratch, "no-token"), HF_HUB_OFFLINE: "", ...env },
    });
    started?.(child);
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

describe("model names", () => {
  it("parses mlx-lm and node-llama-cpp forms, with a revision after the repository", () => {
    expect(parseModelName("mlx-community/Qwen3-4B-4bit")).toEqual({ repo: "mlx-community/Qwen3-4B-4bit", revision: "main" });
    expect(parseModelName("hf:owner/name/sub/model-Q4_K_M.gguf")).toEqual({ repo: "owner/name", revision: "main", file: "sub/model-Q4_K_M.gguf" });
    expect(parseModelName("hf:owner/name:Q4_K_M")).toEqual({ repo: "owner/name", revision: "main", quant: "Q4_K_M" });
    expect(parseModelName("owner/name@v1.2:q8_0")).toEqual({ repo: "owner/name", revision: "v1.2", quant: "q8_0" });
    expect(parseModelName("hf:owner/name@0123abc/m.gguf")).toEqual({ repo: "owner/name", revision: "0123abc", file: "m.gguf" });
    for (const path of ["./model", "../shared/models/x", "/abs/model", "model.gguf", "a/b/c", "owner/name/../x.gguf", "hf:owner/name/x.bin"]) {
      expect(parseModelName(path), path).toBeUndefined();
    }
  });

  it("picks a GGUF by quantization with all its split parts, and only the shards an index names", () => {
    const paths = ["README.md", "m-Q4_K_M-00002-of-00002.gguf", "m-Q4_K_M-00001-of-00002.gguf", "m-Q8_0.gguf", "mmproj-Q8_0.gguf", "Q4_K_S/m.Q4_K_S.gguf"];
    expect(selectFiles(paths, { quant: "q4_k_m" }, "o/n")).toEqual({ format: "gguf", primary: "m-Q4_K_M-00001-of-00002.gguf", files: ["m-Q4_K_M-00001-of-00002.gguf", "m-Q4_K_M-00002-of-00002.gguf"] });
    expect(selectFiles(paths, { quant: "Q8_0" }, "o/n")).toMatchObject({ files: ["m-Q8_0.gguf"] });
    expect(selectFiles(paths, { quant: "Q4_K_S" }, "o/n")).toMatchObject({ files: ["Q4_K_S/m.Q4_K_S.gguf"] });
    expect(() => selectFiles(paths, { file: "m-Q4_K_M-00001-of-00003.gguf" }, "o/n")).toThrow(/no file m-Q4_K_M-00001-of-00003\.gguf, m-Q4_K_M-00002-of-00003\.gguf, m-Q4_K_M-00003-of-00003\.gguf/);
    const dir = ["config.json", "tokenizer.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "consolidated.safetensors", "README.md"];
    expect(directoryFiles(dir, { a: "model-00001-of-00002.safetensors", b: "model-00002-of-00002.safetensors", c: "model-00001-of-00002.safetensors" }))
      .toEqual(["config.json", "tokenizer.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]);
  });
});

describe("pullModel", () => {
  it("fetches only the files an MLX model needs into Hugging Face's cache layout, reporting progress", async () => {
    const events: PullProgress[] = [];
    hub.throttle(5);
    const pulled = await pullModel(MLX_REPO, { ...opts(), concurrency: 2, onProgress: (p) => events.push({ ...p }) });
    // In parallel, within the bound: at most 2 file requests open at any moment, and at some moment 2.
    const windows = hub.transfers().filter((r) => r.sent > 0).map((r) => [r.at, r.end!] as const);
    const open = windows.map(([at]) => windows.filter(([a, e]) => a <= at && at < e).length);
    expect(Math.max(...open)).toBe(2);
    const commit = hub.commitOf(MLX_REPO);
    expect(pulled).toMatchObject({ repo: MLX_REPO, revision: "main", commit, format: "mlx", online: true, path: join(repoDir(MLX_REPO), "snapshots", commit) });
    expect(new Set(fetchedFiles())).toEqual(new Set(readdirSync(join(stories, "mlx-4bit"))));
    expect(readFileSync(join(repoDir(MLX_REPO), "refs", "main"), "utf8")).toBe(commit);
    // The weights: snapshots/<commit>/<file> is a relative link to blobs/<sha256>, byte-identical to the source.
    const weights = join(pulled.path, "model.safetensors");
    const digest = sha256(join(stories, "mlx-4bit", "model.safetensors"));
    expect(lstatSync(weights).isSymbolicLink()).toBe(true);
    expect(readlinkSync(weights)).toBe(join("..", "..", "blobs", digest));
    expect(sha256(weights)).toBe(digest);
    expect(readdirSync(join(repoDir(MLX_REPO), "blobs")).filter((b) => b.endsWith(".incomplete"))).toEqual([]);
    // Progress: one total, monotonic overall bytes, ending at the total with every file done.
    const last = events.at(-1)!;
    const total = readdirSync(join(stories, "mlx-4bit")).reduce((s, f) => s + statSync(join(stories, "mlx-4bit", f)).size, 0);
    expect(last).toMatchObject({ bytes: total, total, filesDone: 7, filesTotal: 7 });
    for (let i = 1; i < events.length; i++) expect(events[i]!.bytes).toBeGreaterThanOrEqual(events[i - 1]!.bytes);
  });

  it("downloads a GGUF picked by quantization, then loads and generates from it; a second run downloads nothing", async () => {
    const env = opts();
    const model = await loadModel(`hf:${GGUF_REPO}:F32`, { hub: env, threads: 1 });
    try {
      expect(model.selection.backend).toBe("gguf");
      expect((await model.generate("Once upon a time", { maxTokens: 12, temperature: 0 })).text).toMatch(GREEDY);
    } finally {
      await model.unload();
    }
    expect(fetchedFiles()).toEqual(["stories260K-F32.gguf"]);
    hub.reset();
    const again = await pullModel(`hf:${GGUF_REPO}:F32`, env);
    expect(again.downloadedBytes).toBe(0);
    expect(hub.transfers()).toEqual([]);
    expect((await pullModel(`hf:${GGUF_REPO}/llama-2-tiny-random-F16.gguf`, env)).path).toMatch(/llama-2-tiny-random-F16\.gguf$/);
  });

  it.skipIf(!mlxAvailable)("loads an MLX repository by name on the MLX engine", async () => {
    const model = await loadModel(`${HF_REPO}@v1.0`, { hub: opts() });
    try {
      expect(model.selection.backend).toBe("mlx");
      expect((await model.generate("Once upon a time", { maxTokens: 12, temperature: 0 })).text).toMatch(GREEDY);
    } finally {
      await model.unload();
    }
    expect(readFileSync(join(repoDir(HF_REPO), "refs", "v1.0"), "utf8")).toBe(hub.commitOf(HF_REPO));
  });

  it("resumes an interrupted download with Range instead of starting over", async () => {
    const file = "stories260K-F32.gguf";
    const size = statSync(join(stories, "stories260K.gguf")).size;
    hub.cutHalfway(file);
    hub.failNext("tokenizer.json", 503); // a busy server is asked again too
    await pullModel(`hf:${GGUF_REPO}/${file}`, opts());
    await pullModel(HF_REPO, opts());
    expect(fetchedFiles().filter((f) => f === "tokenizer.json")).toHaveLength(2);
    const transfers = hub.requests.filter((r) => r.server === "cdn" && r.path.endsWith(sha256(join(stories, "stories260K.gguf"))));
    expect(transfers).toHaveLength(2);
    expect(transfers[0]!.range).toBeUndefined();
    // The second request asks for the rest only, from where the received bytes end (bytes in flight when
    // the connection dropped are lost, so that is at most where the server's sending stopped).
    const from = resumedFrom(transfers[1]!);
    expect(from).toBeGreaterThan(0);
    expect(from).toBeLessThanOrEqual(transfers[0]!.sent);
    expect(transfers[1]!.sent).toBe(size - from);
    expect(sha256(join(repoDir(GGUF_REPO), "blobs", sha256(join(stories, "stories260K.gguf"))))).toBe(sha256(join(stories, "stories260K.gguf")));
  });

  it("leaves nothing that looks complete when a download dies, and the next run resumes it", async () => {
    const file = "stories260K-F32.gguf";
    const digest = sha256(join(stories, "stories260K.gguf"));
    hub.cutHalfway(file);
    const error = await pullModel(`hf:${GGUF_REPO}/${file}`, opts({ retries: 0 })).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DownloadError);
    expect((error as Error).message).toMatch(/interrupted at \d+ of 1185376 bytes.*run it again to resume/);
    const blobs = join(repoDir(GGUF_REPO), "blobs");
    expect(readdirSync(blobs)).toEqual([`${digest}.incomplete`]);
    expect(existsSync(join(repoDir(GGUF_REPO), "snapshots", hub.commitOf(GGUF_REPO), file))).toBe(false);
    const partial = statSync(join(blobs, `${digest}.incomplete`)).size;
    hub.reset();
    await pullModel(`hf:${GGUF_REPO}/${file}`, opts());
    expect(hub.requests.filter((r) => r.server === "cdn").map((r) => r.range)).toEqual([`bytes=${partial}-`]);
    expect(readdirSync(blobs)).toEqual([digest]);
  });

  it("treats a connection that stops sending as interrupted, and resumes it", async () => {
    hub.throttle(2000); // 16 KiB, then silence much longer than the stall timeout
    const error = await pullModel(`hf:${GGUF_REPO}:F32`, opts({ stallTimeoutMs: 400, retries: 1 })).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DownloadError);
    expect((error as Error).message).toMatch(/interrupted at \d+ of 1185376 bytes \(no data for 400 ms\); run it again to resume/);
    const [first, second] = hub.requests.filter((r) => r.server === "cdn");
    expect(first!.range).toBeUndefined();
    expect(resumedFrom(second!)).toBeLessThanOrEqual(first!.sent); // from what arrived (on a loaded machine, possibly nothing)
  });

  it("refuses a file that does not match the hub's checksum", async () => {
    hub.corrupt("stories260K-F32.gguf");
    const error = await pullModel(`hf:${GGUF_REPO}:F32`, opts()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DownloadError);
    expect((error as Error).message).toMatch(/stories260K-F32\.gguf does not match the hub's checksum.*discarded/);
    expect(readdirSync(join(repoDir(GGUF_REPO), "blobs"))).toEqual([]);
  });

  it("cancels with an AbortSignal, keeping the partial file for the next run", async () => {
    hub.throttle(20);
    const controller = new AbortController();
    const pending = pullModel(`hf:${GGUF_REPO}:F32`, { ...opts(), signal: controller.signal, onProgress: (p) => p.bytes > 100_000 && controller.abort() });
    await expect(pending).rejects.toMatchObject({ name: "AbortError" });
    const blobs = readdirSync(join(repoDir(GGUF_REPO), "blobs"));
    expect(blobs).toHaveLength(1);
    expect(blobs[0]).toMatch(/\.incomplete$/);
  });

  it("works offline from the cache, and says so when the model is not there", async () => {
    const offline = opts({ offline: true });
    const missing = await pullModel(MLX_REPO, offline).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(ModelNotFoundError);
    expect((missing as Error).message).toMatch(/mlx-test\/stories260K-4bit.*HF_HUB_OFFLINE is set and it is not in the cache/);
    await pullModel(MLX_REPO, opts());
    hub.reset();
    const cached = await pullModel(MLX_REPO, offline);
    expect(cached).toMatchObject({ online: false, downloadedBytes: 0, commit: hub.commitOf(MLX_REPO) });
    expect(hub.requests).toEqual([]);
    // The hub unreachable (not offline mode): the cache still serves.
    const unreachable = await pullModel(MLX_REPO, opts({ endpoint: "http://127.0.0.1:9" }));
    expect(unreachable.online).toBe(false);
  });

  it("names the repository, revision or file that is missing, and what to do about a gated one", async () => {
    const cases: [string, Record<string, unknown>, new (...a: never[]) => Error, RegExp][] = [
      ["nobody/no-such-model", {}, ModelNotFoundError, /nobody\/no-such-model.*no such repository on http:\/\/127\.0\.0\.1:\d+; check the name, or if it is private, set HF_TOKEN/],
      [`${MLX_REPO}@no-branch`, {}, ModelNotFoundError, /no revision "no-branch"/],
      [`hf:${GGUF_REPO}/missing.gguf`, {}, ModelNotFoundError, /no file missing\.gguf in the repository; GGUF files there: llama-2-tiny-random-F16\.gguf, stories260K-F32\.gguf/],
      [`hf:${GGUF_REPO}:Q4_K_M`, {}, ModelNotFoundError, /no GGUF file with quantization Q4_K_M/],
      [`hf:${GGUF_REPO}`, {}, ModelNotFoundError, /several GGUF models.*pick one with :<quantization>/],
      [GATED_REPO, {}, HubAccessError, /gated-org\/stories260K-GGUF is a gated model: accept its conditions at .* and set HF_TOKEN/],
      [GATED_REPO, { token: "hf_wrong" }, HubAccessError, /the token in HF_TOKEN has no access/],
    ];
    for (const [name, extra, type, message] of cases) {
      const error = await pullModel(name, opts(extra)).catch((e: unknown) => e);
      expect(error, name).toBeInstanceOf(type);
      expect((error as Error).message, name).toMatch(message);
    }
    // Bad options are refused before any request.
    hub.reset();
    await expect(pullModel(MLX_REPO, opts({ concurrency: 0 }))).rejects.toThrow(/Invalid option "concurrency": expected a positive integer, got 0/);
    await expect(pullModel("./not/a/name", opts())).rejects.toThrow(/Invalid option "name"/);
    expect(hub.requests).toEqual([]);
    // Without hf:, a name might be a mistyped path: the error says both were tried.
    await expect(loadModel("models/not-here", { hub: opts() })).rejects.toThrow(/Model not found: models\/not-here \(no such local path, and no such repository on/);
    hub.reset();
    const gated = await pullModel(GATED_REPO, opts({ token: hub.token }));
    expect(gated.format).toBe("gguf");
    // The token goes to the hub only, not to the CDN it redirects to.
    expect(hub.requests.filter((r) => r.server === "cdn" && r.authorization)).toEqual([]);
    expect(hub.requests.filter((r) => r.server === "hub").every((r) => r.authorization === `Bearer ${hub.token}`)).toBe(true);
  });
});

describe("mlx-node pull, ls, rm", () => {
  it("pulls with plain progress lines off a terminal, lists, and removes", async () => {
    const pull = await run(["pull", `hf:${GGUF_REPO}:F32`]);
    expect(pull.code, pull.stderr).toBe(0);
    expect(pull.stderr).toMatch(/stories260K-F32\.gguf 100% \(1\.1 MiB\)/);
    expect(pull.stdout.trim()).toBe(join(repoDir(GGUF_REPO), "snapshots", hub.commitOf(GGUF_REPO), "stories260K-F32.gguf"));
    const ls = await run(["ls"]);
    expect(ls.code, ls.stderr).toBe(0);
    expect(ls.stdout).toMatch(/^NAME\s+REVISION\s+FORMAT\s+SIZE\n/);
    expect(ls.stdout).toMatch(new RegExp(`hf:gguf-test/tiny-GGUF/stories260K-F32\\.gguf\\s+main \\(${hub.commitOf(GGUF_REPO).slice(0, 8)}\\)\\s+gguf\\s+1\\.1 MiB\\n`));
    const rm = await run(["rm", GGUF_REPO]);
    expect(rm.code, rm.stderr).toBe(0);
    expect(existsSync(repoDir(GGUF_REPO))).toBe(false);
    const again = await run(["rm", GGUF_REPO]);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/MODEL_NOT_FOUND: Model not found: gguf-test\/tiny-GGUF \(not in the cache/);
  });

  it("generate takes a name, and offline mode says what is missing", async () => {
    const offline = await run(["generate", "--model", `hf:${GGUF_REPO}:F32`, "-n", "12", "--threads", "1", "Once upon a time"], { HF_HUB_OFFLINE: "1" });
    expect(offline.code).not.toBe(0);
    expect(offline.stderr).toMatch(/HF_HUB_OFFLINE is set and it is not in the cache/);
    const r = await run(["generate", "--model", `hf:${GGUF_REPO}:F32`, "-n", "12", "--threads", "1", "Once upon a time"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(GREEDY);
    expect(r.stderr).toMatch(/^gguf-test\/tiny-GGUF: stories260K-F32\.gguf 100% \(1\.1 MiB\); 1\.1 MiB of 1\.1 MiB\n\[gguf: /);
    const cached = await run(["generate", "--model", `hf:${GGUF_REPO}:F32`, "-n", "12", "--threads", "1", "Once upon a time"], { HF_HUB_OFFLINE: "1" });
    expect(cached.code, cached.stderr).toBe(0);
    expect(cached.stderr).toMatch(/^\[gguf: the path is a \.gguf file\] 12 tokens/);
  });

  it("serve and eval take names too (here from the cache, offline)", async () => {
    await pullModel(`hf:${GGUF_REPO}:F32`, opts());
    const fixtures = join(scratch, "one-case.json");
    writeFileSync(fixtures, JSON.stringify({ defaults: { temperature: 0, maxTokens: 12 }, cases: [{ name: "greedy", prompt: "Once upon a time", expect: [GREEDY.source] }] }));
    const offline = { HF_HUB_OFFLINE: "1" };
    const evaluated = await run(["eval", "--model", `hf:${GGUF_REPO}:F32`, "--fixtures", fixtures, "--threads", "1"], offline);
    expect(evaluated.code, evaluated.stderr).toBe(0);
    expect(evaluated.stdout).toMatch(/1\/1/);
    const served = await run(["serve", "--model", `hf:${GGUF_REPO}:F32`, "--port", "0", "--threads", "1"], offline, undefined, (child) => {
      child.stderr!.on("data", (d: Buffer) => d.toString().includes("serving") && child.kill("SIGTERM"));
    });
    expect(served.stderr).toMatch(/serving tiny-GGUF:F32 \(gguf: the path is a \.gguf file\) at http:\/\/127\.0\.0\.1:\d+\/v1/);
  });

  it("draws a progress bar on a terminal, redrawn in place, ending with a newline", () => {
    let out = "";
    const report = progressReporter({ isTTY: true, columns: 100, write: (s: string) => ((out += s), true) } as never);
    const base = { repo: "o/n", file: "m.gguf", fileTotal: 2048, total: 2048, filesTotal: 1 };
    report({ ...base, fileBytes: 0, bytes: 0, filesDone: 0 });
    report({ ...base, fileBytes: 2048, bytes: 2048, filesDone: 1 });
    expect(out).toBe(`\r\x1b[Ko/n [${"-".repeat(40)}]   0% 0 B/2.0 KiB 0/1 files\r\x1b[Ko/n [${"#".repeat(40)}] 100% 2.0 KiB/2.0 KiB 1/1 files\n`);
  });

  it.skipIf(!mlxAvailable)("a local path wins over a hub name of the same spelling", async () => {
    const cwd = mkdtempSync(join(scratch, "cwd-"));
    mkdirSync(join(cwd, "mlx-test"));
    symlinkSync(join(stories, "hf-f32"), join(cwd, MLX_REPO));
    const r = await run(["generate", "--model", MLX_REPO, "-n", "12", "Once upon a time"], {}, cwd);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(GREEDY);
    expect(hub.requests).toEqual([]);
  });

  it("a killed pull leaves only a partial file and a dead lock; the next pull takes both over and resumes", async () => {
    hub.throttle(30);
    const digest = sha256(join(stories, "stories260K.gguf"));
    const killed = await run(["pull", `hf:${GGUF_REPO}:F32`], {}, undefined, (child) => {
      const poll = setInterval(() => {
        if ((hub.requests.find((r) => r.server === "cdn")?.sent ?? 0) > 200_000) {
          clearInterval(poll);
          child.kill("SIGKILL");
        }
      }, 20);
    });
    expect(killed.code).toBeNull();
    expect(readdirSync(join(repoDir(GGUF_REPO), "blobs"))).toEqual([`${digest}.incomplete`]);
    expect(readdirSync(join(cacheDir, ".locks", "models--gguf-test--tiny-GGUF"))).toEqual([`${digest}.mlx-node.lock`]);
    hub.reset();
    const pulled = await pullModel(`hf:${GGUF_REPO}:F32`, opts());
    expect(sha256(pulled.path)).toBe(digest);
    const resumed = hub.requests.find((r) => r.server === "cdn")!;
    expect(resumedFrom(resumed)).toBeGreaterThan(0);
    expect(resumed.sent).toBe(statSync(join(stories, "stories260K.gguf")).size - resumedFrom(resumed));
    expect(readdirSync(join(cacheDir, ".locks", "models--gguf-test--tiny-GGUF"))).toEqual([]);
  });

  it("two processes pulling one model at once end with one correct copy", async () => {
    hub.throttle(60); // the weights take ~1 s to send, so the second process arrives while they are in flight
    const [a, b] = await Promise.all([run(["pull", MLX_REPO]), run(["pull", MLX_REPO])]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    const weightsTransfer = hub.requests.find((r) => r.server === "cdn")!;
    const infoCalls = hub.requests.filter((r) => r.path.endsWith("/revision/main"));
    expect(infoCalls).toHaveLength(2);
    expect(infoCalls.every((r) => r.at < weightsTransfer.end!)).toBe(true);
    const blobs = readdirSync(join(repoDir(MLX_REPO), "blobs"));
    expect(blobs).toHaveLength(7);
    const weights = sha256(join(stories, "mlx-4bit", "model.safetensors"));
    expect(sha256(join(repoDir(MLX_REPO), "blobs", weights))).toBe(weights);
    // The weights crossed the network once: the second process waited for the first one's lock.
    expect(hub.requests.filter((r) => r.server === "cdn").reduce((s, r) => s + r.sent, 0)).toBe(statSync(join(stories, "mlx-4bit", "model.safetensors")).size);
    expect(readdirSync(join(cacheDir, ".locks", "models--mlx-test--stories260K-4bit"))).toEqual([]);
  });
});

const py = pythonModules(["huggingface_hub"]);
describe.skipIf(!py.available)("cache interop (huggingface_hub)", () => {
  const runPy = async (args: string[], env: Record<string, string> = {}) =>
    (await promisify(execFile)(python, [join(pythonScripts, "hf_cache.py"), ...args], {
      env: { ...process.env, HF_HUB_CACHE: cacheDir, HF_ENDPOINT: hub.endpoint, HF_TOKEN: "", HF_HUB_OFFLINE: "0", HF_HUB_DISABLE_TELEMETRY: "1", HF_HUB_DISABLE_XET: "1", ...env },
    })).stdout;

  it("uses a model huggingface_hub downloaded without downloading it again", async () => {
    const path = (await runPy(["download", HF_REPO])).trim();
    expect(path).toBe(join(repoDir(HF_REPO), "snapshots", hub.commitOf(HF_REPO)));
    hub.reset();
    const pulled = await pullModel(HF_REPO, opts());
    expect(pulled.path).toBe(path);
    expect(pulled.downloadedBytes).toBe(0);
    expect(hub.transfers()).toEqual([]);
  });

  it("scan_cache_dir() reads what mlx-node wrote", async () => {
    await pullModel(MLX_REPO, opts());
    await pullModel(`hf:${GGUF_REPO}:F32`, opts());
    const scan = JSON.parse(await runPy(["scan"])) as { warnings: string[]; repos: { repo_id: string; size_on_disk: number; nb_files: number; refs: string[]; revisions: { commit_hash: string; files: string[] }[] }[] };
    expect(scan.warnings).toEqual([]);
    const mlx = scan.repos.find((r) => r.repo_id === MLX_REPO)!;
    expect(mlx).toMatchObject({ refs: ["main"], nb_files: 7 });
    expect(mlx.revisions[0]!.commit_hash).toBe(hub.commitOf(MLX_REPO));
    expect(mlx.revisions[0]!.files).toEqual([...readdirSync(join(stories, "mlx-4bit"))].sort());
    expect(mlx.size_on_disk).toBe(readdirSync(join(stories, "mlx-4bit")).reduce((s, f) => s + statSync(join(stories, "mlx-4bit", f)).size, 0));
    expect(scan.repos.find((r) => r.repo_id === GGUF_REPO)!.revisions[0]!.files).toEqual(["stories260K-F32.gguf"]);
    // huggingface_hub offline (as mlx-lm loads) finds the snapshot mlx-node wrote.
    hub.reset();
    expect((await runPy(["download", MLX_REPO], { HF_HUB_OFFLINE: "1" })).trim()).toBe(join(repoDir(MLX_REPO), "snapshots", hub.commitOf(MLX_REPO)));
    expect(hub.requests).toEqual([]);
    // And mlx-node lists what huggingface_hub would.
    expect((await listCachedModels({ cacheDir })).map((m) => [m.name, m.format])).toEqual([[`hf:${GGUF_REPO}/stories260K-F32.gguf`, "gguf"], [MLX_REPO, "mlx"]]);
    expect(await removeCachedModel(MLX_REPO, { cacheDir })).toBe(mlx.size_on_disk);
  });
});
