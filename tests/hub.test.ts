/**
 * Models by name from the Hugging Face Hub (the library), against a local hub serving real files
 * from ../shared/models over loopback (tests/support/fake-hub.ts): names and file choice, the shared
 * cache layout, downloads that resume, verify, cancel and fail clearly, offline mode.
 */
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  DownloadError, HubAccessError, loadModel, ModelNotFoundError, parseModelName, pullModel, type PullProgress,
} from "../lib/index.js";
import { hubSettings } from "../lib/hub/cache.js";
import { directoryFiles, selectFiles } from "../lib/hub/files.js";
import { GATED_REPO, GGUF_REPO, GREEDY, HF_REPO, MLX_REPO, resumedFrom, sha256, stories, useFakeHub } from "./support/hub-setup.js";
import { mlxAvailable } from "./support/mlx.js";

const t = useFakeHub();

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

describe("Hugging Face environment", () => {
  it("reads HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN (or its file) and HF_HUB_OFFLINE as huggingface_hub does", async () => {
    const saved = { ...process.env };
    try {
      for (const key of ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"]) delete process.env[key];
      process.env.HF_HOME = join(t.scratch, "hf-home");
      mkdirSync(process.env.HF_HOME, { recursive: true });
      writeFileSync(join(process.env.HF_HOME, "token"), "hf_from_file\n");
      process.env.HF_ENDPOINT = "http://mirror.example/";
      expect(await hubSettings()).toEqual({ cacheDir: join(t.scratch, "hf-home", "hub"), endpoint: "http://mirror.example", token: "hf_from_file", offline: false });
      Object.assign(process.env, { HF_HUB_CACHE: "/elsewhere", HF_TOKEN: "hf_env", HF_HUB_OFFLINE: "YES" });
      expect(await hubSettings()).toMatchObject({ cacheDir: "/elsewhere", token: "hf_env", offline: true });
      Object.assign(process.env, { HF_TOKEN: "", HF_HUB_OFFLINE: "", TRANSFORMERS_OFFLINE: "1" });
      expect(await hubSettings()).toMatchObject({ token: "hf_from_file", offline: true }); // empty counts as unset
    } finally {
      process.env = saved;
    }
  });
});

describe("pullModel", () => {
  it("fetches only the files an MLX model needs into Hugging Face's cache layout, reporting progress", async () => {
    const events: PullProgress[] = [];
    t.hub.throttle(5);
    const pulled = await pullModel(MLX_REPO, { ...t.opts(), concurrency: 2, onProgress: (p) => events.push({ ...p }) });
    // In parallel, within the bound: at most 2 file requests open at any moment, and at some moment 2.
    const windows = t.hub.transfers().filter((r) => r.sent > 0).map((r) => [r.at, r.end!] as const);
    const open = windows.map(([at]) => windows.filter(([a, e]) => a <= at && at < e).length);
    expect(Math.max(...open)).toBe(2);
    const commit = t.hub.commitOf(MLX_REPO);
    expect(pulled).toMatchObject({ repo: MLX_REPO, revision: "main", commit, format: "mlx", online: true, path: join(t.repoDir(MLX_REPO), "snapshots", commit) });
    expect(new Set(t.fetchedFiles())).toEqual(new Set(readdirSync(join(stories, "mlx-4bit"))));
    expect(readFileSync(join(t.repoDir(MLX_REPO), "refs", "main"), "utf8")).toBe(commit);
    // The weights: snapshots/<commit>/<file> is a relative link to blobs/<sha256>, byte-identical to the source.
    const weights = join(pulled.path, "model.safetensors");
    const digest = sha256(join(stories, "mlx-4bit", "model.safetensors"));
    expect(lstatSync(weights).isSymbolicLink()).toBe(true);
    expect(readlinkSync(weights)).toBe(join("..", "..", "blobs", digest));
    expect(sha256(weights)).toBe(digest);
    expect(readdirSync(join(t.repoDir(MLX_REPO), "blobs")).filter((b) => b.endsWith(".incomplete"))).toEqual([]);
    // Progress: one total, monotonic overall bytes, ending at the total with every file done.
    const last = events.at(-1)!;
    const total = readdirSync(join(stories, "mlx-4bit")).reduce((s, f) => s + statSync(join(stories, "mlx-4bit", f)).size, 0);
    expect(last).toMatchObject({ bytes: total, total, filesDone: 7, filesTotal: 7 });
    for (let i = 1; i < events.length; i++) expect(events[i]!.bytes).toBeGreaterThanOrEqual(events[i - 1]!.bytes);
  });

  it("downloads a GGUF picked by quantization, then loads and generates from it; a second run downloads nothing", async () => {
    const env = t.opts();
    const model = await loadModel(`hf:${GGUF_REPO}:F32`, { hub: env, threads: 1 });
    try {
      expect(model.selection.backend).toBe("gguf");
      expect((await model.generate("Once upon a time", { maxTokens: 12, temperature: 0 })).text).toMatch(GREEDY);
    } finally {
      await model.unload();
    }
    expect(t.fetchedFiles()).toEqual(["stories260K-F32.gguf"]);
    t.hub.reset();
    const again = await pullModel(`hf:${GGUF_REPO}:F32`, env);
    expect(again.downloadedBytes).toBe(0);
    expect(t.hub.transfers()).toEqual([]);
    expect((await pullModel(`hf:${GGUF_REPO}/llama-2-tiny-random-F16.gguf`, env)).path).toMatch(/llama-2-tiny-random-F16\.gguf$/);
  });

  it.skipIf(!mlxAvailable)("loads an MLX repository by name on the MLX engine", async () => {
    const model = await loadModel(`${HF_REPO}@v1.0`, { hub: t.opts() });
    try {
      expect(model.selection.backend).toBe("mlx");
      expect((await model.generate("Once upon a time", { maxTokens: 12, temperature: 0 })).text).toMatch(GREEDY);
    } finally {
      await model.unload();
    }
    expect(readFileSync(join(t.repoDir(HF_REPO), "refs", "v1.0"), "utf8")).toBe(t.hub.commitOf(HF_REPO));
  });

  it("resumes an interrupted download with Range instead of starting over", async () => {
    const file = "stories260K-F32.gguf";
    const size = statSync(join(stories, "stories260K.gguf")).size;
    t.hub.cutHalfway(file);
    t.hub.failNext("tokenizer.json", 503); // a busy server is asked again too
    await pullModel(`hf:${GGUF_REPO}/${file}`, t.opts());
    await pullModel(HF_REPO, t.opts());
    expect(t.fetchedFiles().filter((f) => f === "tokenizer.json")).toHaveLength(2);
    const transfers = t.hub.requests.filter((r) => r.server === "cdn" && r.path.endsWith(sha256(join(stories, "stories260K.gguf"))));
    expect(transfers).toHaveLength(2);
    expect(transfers[0]!.range).toBeUndefined();
    // The second request asks for the rest only, from where the received bytes end (bytes in flight when
    // the connection dropped are lost, so that is at most where the server's sending stopped).
    const from = resumedFrom(transfers[1]!);
    expect(from).toBeGreaterThan(0);
    expect(from).toBeLessThanOrEqual(transfers[0]!.sent);
    expect(transfers[1]!.sent).toBe(size - from);
    expect(sha256(join(t.repoDir(GGUF_REPO), "blobs", sha256(join(stories, "stories260K.gguf"))))).toBe(sha256(join(stories, "stories260K.gguf")));
  });

  it("leaves nothing that looks complete when a download dies, and the next run resumes it", async () => {
    const file = "stories260K-F32.gguf";
    const digest = sha256(join(stories, "stories260K.gguf"));
    t.hub.cutHalfway(file);
    const error = await pullModel(`hf:${GGUF_REPO}/${file}`, t.opts({ retries: 0 })).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DownloadError);
    expect((error as Error).message).toMatch(/interrupted at \d+ of 1185376 bytes.*run it again to resume/);
    const blobs = join(t.repoDir(GGUF_REPO), "blobs");
    expect(readdirSync(blobs)).toEqual([`${digest}.incomplete`]);
    expect(existsSync(join(t.repoDir(GGUF_REPO), "snapshots", t.hub.commitOf(GGUF_REPO), file))).toBe(false);
    const partial = statSync(join(blobs, `${digest}.incomplete`)).size;
    t.hub.reset();
    await pullModel(`hf:${GGUF_REPO}/${file}`, t.opts());
    expect(t.hub.requests.filter((r) => r.server === "cdn").map((r) => r.range)).toEqual([`bytes=${partial}-`]);
    expect(readdirSync(blobs)).toEqual([digest]);
  });

  it("treats a connection that stops sending as interrupted, and resumes it", async () => {
    t.hub.throttle(2000); // silence much longer than the stall timeout
    const error = await pullModel(`hf:${GGUF_REPO}:F32`, t.opts({ stallTimeoutMs: 400, retries: 1 })).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DownloadError);
    expect((error as Error).message).toMatch(/interrupted at 0 of 1185376 bytes \(no data for 400 ms\); run it again to resume/);
    const [first, second] = t.hub.requests.filter((r) => r.server === "cdn");
    expect(first!.range).toBeUndefined();
    expect(first!.sent).toBe(0);
    expect(second!.range).toBeUndefined(); // nothing had arrived, so nothing to resume from
  });

  it("refuses a file that does not match the hub's checksum", async () => {
    t.hub.corrupt("stories260K-F32.gguf");
    const error = await pullModel(`hf:${GGUF_REPO}:F32`, t.opts()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DownloadError);
    expect((error as Error).message).toMatch(/stories260K-F32\.gguf does not match the hub's checksum.*discarded/);
    expect(readdirSync(join(t.repoDir(GGUF_REPO), "blobs"))).toEqual([]);
  });

  it("cancels with an AbortSignal, keeping the partial file for the next run", async () => {
    t.hub.throttle(20);
    const controller = new AbortController();
    const pending = pullModel(`hf:${GGUF_REPO}:F32`, { ...t.opts(), signal: controller.signal, onProgress: (p) => p.bytes > 100_000 && controller.abort() });
    await expect(pending).rejects.toMatchObject({ name: "AbortError" });
    const blobs = readdirSync(join(t.repoDir(GGUF_REPO), "blobs"));
    expect(blobs).toHaveLength(1);
    expect(blobs[0]).toMatch(/\.incomplete$/);
  });

  it("works offline from the cache, and says so when the model is not there", async () => {
    const offline = t.opts({ offline: true });
    const missing = await pullModel(MLX_REPO, offline).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(ModelNotFoundError);
    expect((missing as Error).message).toMatch(/mlx-test\/stories260K-4bit.*HF_HUB_OFFLINE is set and it is not in the cache/);
    await pullModel(MLX_REPO, t.opts());
    t.hub.reset();
    const cached = await pullModel(MLX_REPO, offline);
    expect(cached).toMatchObject({ online: false, downloadedBytes: 0, commit: t.hub.commitOf(MLX_REPO) });
    expect(t.hub.requests).toEqual([]);
    // The hub unreachable (not offline mode): the cache still serves.
    const unreachable = await pullModel(MLX_REPO, t.opts({ endpoint: "http://127.0.0.1:9" }));
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
      const error = await pullModel(name, t.opts(extra)).catch((e: unknown) => e);
      expect(error, name).toBeInstanceOf(type);
      expect((error as Error).message, name).toMatch(message);
    }
    // Bad options are refused before any request.
    t.hub.reset();
    await expect(pullModel(MLX_REPO, t.opts({ concurrency: 0 }))).rejects.toThrow(/Invalid option "concurrency": expected a positive integer, got 0/);
    await expect(pullModel("./not/a/name", t.opts())).rejects.toThrow(/Invalid option "name"/);
    expect(t.hub.requests).toEqual([]);
    // Without hf:, a name might be a mistyped path: the error says both were tried.
    await expect(loadModel("models/not-here", { hub: t.opts() })).rejects.toThrow(/Model not found: models\/not-here \(no such local path, and no such repository on/);
    await expect(loadModel("models/not-here", { hub: t.opts({ endpoint: "http://127.0.0.1:9" }) })).rejects.toThrow(/Model not found: models\/not-here \(no such local path, and Cannot reach http:\/\/127\.0\.0\.1:9/);
    t.hub.reset();
    const gated = await pullModel(GATED_REPO, t.opts({ token: t.hub.token }));
    expect(gated.format).toBe("gguf");
    // The token goes to the hub only, not to the CDN it redirects to.
    expect(t.hub.requests.filter((r) => r.server === "cdn" && r.authorization)).toEqual([]);
    expect(t.hub.requests.filter((r) => r.server === "hub").every((r) => r.authorization === `Bearer ${t.hub.token}`)).toBe(true);
  });
});

