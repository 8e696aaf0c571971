/**
 * The local hub the hub tests share: repositories made of real files from ../shared/models, a fresh
 * cache for every test, and the CLI run as a child process against both.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach } from "vitest";
import { startFakeHub, type FakeHub, type LoggedRequest } from "./fake-hub.js";

export const models = join(import.meta.dirname, "..", "..", "..", "shared", "models");
export const stories = join(models, "stories260K");
const cli = join(import.meta.dirname, "..", "..", "dist", "lib", "cli", "main.js");
export const MLX_REPO = "mlx-test/stories260K-4bit";
export const HF_REPO = "hf-test/stories260K";
export const GGUF_REPO = "gguf-test/tiny-GGUF";
export const GATED_REPO = "gated-org/stories260K-GGUF";
export const GREEDY = /^, there was a little girl named Lily\./;

export const sha256 = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");
/** Where a request's `Range: bytes=N-` starts (-1 without a range). */
export const resumedFrom = (r: LoggedRequest) => Number(/^bytes=(\d+)-$/.exec(r.range ?? "")?.[1] ?? -1);

/** Starts the hub for this test file (and stops it after); gives a new empty cache to every test. */
export function useFakeHub() {
  let hub: FakeHub;
  let cacheDir = "";
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
  return {
    get hub() {
      return hub;
    },
    get cacheDir() {
      return cacheDir;
    },
    scratch,
    /** pullModel options for this hub and cache, with no token and online. */
    opts: (extra: Record<string, unknown> = {}) => ({ cacheDir, endpoint: hub.endpoint, token: "", offline: false, ...extra }),
    repoDir: (repo: string) => join(cacheDir, `models--${repo.replace("/", "--")}`),
    /** Repository files requested from the hub (`resolve`), by name. */
    fetchedFiles: () => hub.requests.filter((r) => r.server === "hub" && r.path.includes("/resolve/")).map((r) => r.path.split("/").pop()),
    /** Runs the CLI as a child process (asynchronously: the hub answers from this process). */
    run(args: string[], env: Record<string, string> = {}, cwd?: string, started?: (child: ChildProcess) => void): Promise<{ code: number | null; stdout: string; stderr: string }> {
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
    },
  };
}
