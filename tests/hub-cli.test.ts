/**
 * Models by name from the command line (`pull`, `ls`, `rm`; `generate`, `serve`, `eval` with names)
 * and the cache shared with Python's huggingface_hub, against the local hub of tests/support/fake-hub.ts.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { listCachedModels, pullModel, removeCachedModel } from "../lib/index.js";
import { progressReporter } from "../lib/cli/hub.js";
import { GGUF_REPO, GREEDY, HF_REPO, MLX_REPO, resumedFrom, sha256, stories, useFakeHub } from "./support/hub-setup.js";
import { mlxAvailable } from "./support/mlx.js";
import { python, pythonModules, pythonScripts } from "./support/python.js";

const t = useFakeHub();

describe("mlx-node pull, ls, rm", () => {
  it("pulls with plain progress lines off a terminal, lists, and removes", async () => {
    const pull = await t.run(["pull", `hf:${GGUF_REPO}:F32`]);
    expect(pull.code, pull.stderr).toBe(0);
    expect(pull.stderr).toMatch(/stories260K-F32\.gguf 100% \(1\.1 MiB\)/);
    expect(pull.stdout.trim()).toBe(join(t.repoDir(GGUF_REPO), "snapshots", t.hub.commitOf(GGUF_REPO), "stories260K-F32.gguf"));
    const ls = await t.run(["ls"]);
    expect(ls.code, ls.stderr).toBe(0);
    expect(ls.stdout).toMatch(/^NAME\s+REVISION\s+FORMAT\s+SIZE\n/);
    expect(ls.stdout).toMatch(new RegExp(`hf:gguf-test/tiny-GGUF/stories260K-F32\\.gguf\\s+main \\(${t.hub.commitOf(GGUF_REPO).slice(0, 8)}\\)\\s+gguf\\s+1\\.1 MiB\\n`));
    const rm = await t.run(["rm", GGUF_REPO]);
    expect(rm.code, rm.stderr).toBe(0);
    expect(existsSync(t.repoDir(GGUF_REPO))).toBe(false);
    const again = await t.run(["rm", GGUF_REPO]);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/MODEL_NOT_FOUND: Model not found: gguf-test\/tiny-GGUF \(not in the cache/);
  });

  it("generate takes a name, and offline mode says what is missing", async () => {
    const offline = await t.run(["generate", "--model", `hf:${GGUF_REPO}:F32`, "-n", "12", "--threads", "1", "Once upon a time"], { HF_HUB_OFFLINE: "1" });
    expect(offline.code).not.toBe(0);
    expect(offline.stderr).toMatch(/HF_HUB_OFFLINE is set and it is not in the cache/);
    const r = await t.run(["generate", "--model", `hf:${GGUF_REPO}:F32`, "-n", "12", "--threads", "1", "Once upon a time"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(GREEDY);
    expect(r.stderr).toMatch(/^gguf-test\/tiny-GGUF: stories260K-F32\.gguf 100% \(1\.1 MiB\); 1\.1 MiB of 1\.1 MiB\n\[gguf: /);
  });

  it("serve and eval take names too (from the cache: eval online, serve offline)", async () => {
    await pullModel(`hf:${GGUF_REPO}:F32`, t.opts());
    const fixtures = join(t.scratch, "one-case.json");
    writeFileSync(fixtures, JSON.stringify({ defaults: { temperature: 0, maxTokens: 12 }, cases: [{ name: "greedy", prompt: "Once upon a time", expect: [GREEDY.source] }] }));
    const offline = { HF_HUB_OFFLINE: "1" };
    const evaluated = await t.run(["eval", "--model", `hf:${GGUF_REPO}:F32`, "--fixtures", fixtures, "--threads", "1"]);
    expect(evaluated.code, evaluated.stderr).toBe(0);
    expect(evaluated.stdout).toMatch(/1\/1/);
    expect(evaluated.stderr).not.toMatch(/100%/); // a cached model shows no download progress
    const served = await t.run(["serve", "--model", `hf:${GGUF_REPO}:F32`, "--port", "0", "--threads", "1"], offline, undefined, (child) => {
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
    const cwd = mkdtempSync(join(t.scratch, "cwd-"));
    mkdirSync(join(cwd, "mlx-test"));
    symlinkSync(join(stories, "hf-f32"), join(cwd, MLX_REPO));
    const r = await t.run(["generate", "--model", MLX_REPO, "-n", "12", "Once upon a time"], {}, cwd);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(GREEDY);
    expect(t.hub.requests).toEqual([]);
  });

  it("a killed pull leaves only a partial file and a dead lock; the next pull takes both over and resumes", async () => {
    t.hub.throttle(30);
    const digest = sha256(join(stories, "stories260K.gguf"));
    const killed = await t.run(["pull", `hf:${GGUF_REPO}:F32`], {}, undefined, (child) => {
      const poll = setInterval(() => {
        if ((t.hub.requests.find((r) => r.server === "cdn")?.sent ?? 0) > 200_000) {
          clearInterval(poll);
          child.kill("SIGKILL");
        }
      }, 20);
    });
    expect(killed.code).toBeNull();
    expect(readdirSync(join(t.repoDir(GGUF_REPO), "blobs"))).toEqual([`${digest}.incomplete`]);
    expect(readdirSync(join(t.cacheDir, ".locks", "models--gguf-test--tiny-GGUF"))).toEqual([`${digest}.mlx-node.lock`]);
    t.hub.reset();
    const pulled = await pullModel(`hf:${GGUF_REPO}:F32`, t.opts());
    expect(sha256(pulled.path)).toBe(digest);
    const resumed = t.hub.requests.find((r) => r.server === "cdn")!;
    expect(resumedFrom(resumed)).toBeGreaterThan(0);
    expect(resumed.sent).toBe(statSync(join(stories, "stories260K.gguf")).size - resumedFrom(resumed));
    expect(readdirSync(join(t.cacheDir, ".locks", "models--gguf-test--tiny-GGUF"))).toEqual([]);
  });

  it("two processes pulling one model at once end with one correct copy", async () => {
    t.hub.throttle(60); // the weights take ~1 s to send, so the second process arrives while they are in flight
    const [a, b] = await Promise.all([t.run(["pull", MLX_REPO]), t.run(["pull", MLX_REPO])]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    const weightsTransfer = t.hub.requests.find((r) => r.server === "cdn")!;
    const infoCalls = t.hub.requests.filter((r) => r.path.endsWith("/revision/main"));
    expect(infoCalls).toHaveLength(2);
    expect(infoCalls.every((r) => r.at < weightsTransfer.end!)).toBe(true);
    const blobs = readdirSync(join(t.repoDir(MLX_REPO), "blobs"));
    expect(blobs).toHaveLength(7);
    const weights = sha256(join(stories, "mlx-4bit", "model.safetensors"));
    expect(sha256(join(t.repoDir(MLX_REPO), "blobs", weights))).toBe(weights);
    // The weights crossed the network once: the second process waited for the first one's lock.
    expect(t.hub.requests.filter((r) => r.server === "cdn").reduce((s, r) => s + r.sent, 0)).toBe(statSync(join(stories, "mlx-4bit", "model.safetensors")).size);
    expect(readdirSync(join(t.cacheDir, ".locks", "models--mlx-test--stories260K-4bit"))).toEqual([]);
  });
});

const py = pythonModules(["huggingface_hub"]);
describe.skipIf(!py.available)("cache interop (huggingface_hub)", () => {
  const runPy = async (args: string[], env: Record<string, string> = {}) =>
    (await promisify(execFile)(python, [join(pythonScripts, "hf_cache.py"), ...args], {
      env: { ...process.env, HF_HUB_CACHE: t.cacheDir, HF_ENDPOINT: t.hub.endpoint, HF_TOKEN: "", HF_HUB_OFFLINE: "0", HF_HUB_DISABLE_TELEMETRY: "1", HF_HUB_DISABLE_XET: "1", ...env },
    })).stdout;

  it("uses a model huggingface_hub downloaded without downloading it again", async () => {
    const path = (await runPy(["download", HF_REPO])).trim();
    expect(path).toBe(join(t.repoDir(HF_REPO), "snapshots", t.hub.commitOf(HF_REPO)));
    t.hub.reset();
    const pulled = await pullModel(HF_REPO, t.opts());
    expect(pulled.path).toBe(path);
    expect(pulled.downloadedBytes).toBe(0);
    expect(t.hub.transfers()).toEqual([]);
  });

  it("scan_cache_dir() reads what mlx-node wrote", async () => {
    await pullModel(MLX_REPO, t.opts());
    await pullModel(`hf:${GGUF_REPO}:F32`, t.opts());
    const scan = JSON.parse(await runPy(["scan"])) as { warnings: string[]; repos: { repo_id: string; size_on_disk: number; nb_files: number; refs: string[]; revisions: { commit_hash: string; files: string[] }[] }[] };
    expect(scan.warnings).toEqual([]);
    const mlx = scan.repos.find((r) => r.repo_id === MLX_REPO)!;
    expect(mlx).toMatchObject({ refs: ["main"], nb_files: 7 });
    expect(mlx.revisions[0]!.commit_hash).toBe(t.hub.commitOf(MLX_REPO));
    expect(mlx.revisions[0]!.files).toEqual([...readdirSync(join(stories, "mlx-4bit"))].sort());
    expect(mlx.size_on_disk).toBe(readdirSync(join(stories, "mlx-4bit")).reduce((s, f) => s + statSync(join(stories, "mlx-4bit", f)).size, 0));
    expect(scan.repos.find((r) => r.repo_id === GGUF_REPO)!.revisions[0]!.files).toEqual(["stories260K-F32.gguf"]);
    // huggingface_hub offline (as mlx-lm loads) finds the snapshot mlx-node wrote.
    t.hub.reset();
    expect((await runPy(["download", MLX_REPO], { HF_HUB_OFFLINE: "1" })).trim()).toBe(join(t.repoDir(MLX_REPO), "snapshots", t.hub.commitOf(MLX_REPO)));
    expect(t.hub.requests).toEqual([]);
    // And mlx-node lists what huggingface_hub would.
    expect((await listCachedModels({ cacheDir: t.cacheDir })).map((m) => [m.name, m.format])).toEqual([[`hf:${GGUF_REPO}/stories260K-F32.gguf`, "gguf"], [MLX_REPO, "mlx"]]);
    expect(await removeCachedModel(MLX_REPO, { cacheDir: t.cacheDir })).toBe(mlx.size_on_disk);
  });
});
