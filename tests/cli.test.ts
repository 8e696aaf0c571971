/**
 * The main job from a shell, as the README gives it: `mlx-node generate` streams text to stdout
 * and reports speed and backend on stderr; `mlx-node info` says what runs here. Run as child
 * processes of the compiled CLI (npm test compiles first).
 */
import { spawn, spawnSync } from "node:child_process";
import { writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { createServer as createNetServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { mlxAvailable, mlxSkipReason } from "./support/mlx.js";

const cli = join(import.meta.dirname, "..", "dist", "lib", "cli", "main.js");
const stories = join(import.meta.dirname, "..", "..", "shared", "models", "stories260K");
const scratch = mkdtempSync(join(tmpdir(), "mlx-node-cli-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function run(...args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The same, without blocking: several commands run at once. */
function runAsync(...args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, ...args], { stdio: ["ignore", "ignore", "pipe"], timeout: 60_000 });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (code) => resolve({ code, stderr }));
  });
}

describe("mlx-node generate", () => {
  it("streams a GGUF model's greedy continuation to stdout, speed and backend to stderr", () => {
    const r = run("generate", "--model", join(stories, "stories260K.gguf"), "-n", "24", "--threads", "1", "Once upon a time");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^, there was a little girl named Lily\./);
    expect(r.stderr).toMatch(/^\[gguf: the path is a \.gguf file\] 24 tokens, [\d.]+ tok\/s, prompt [\d.]+ tok\/s, first token \d+ ms, finish: length\n$/);
  });

  it.skipIf(!mlxAvailable)("runs a model directory on the MLX engine", () => {
    const r = run("generate", "--model", join(stories, "hf-f32"), "-n", "24", "Once upon a time");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^, there was a little girl named Lily\./);
    expect(r.stderr).toMatch(/^\[mlx: the path is a model directory and the MLX engine is available\] 24 tokens/);
  });

  it("answers with JSON valid against --json-schema", () => {
    const schema = join(scratch, "person.json");
    writeFileSync(schema, JSON.stringify({ type: "object", properties: { name: { type: "string" }, age: { type: "integer" } }, required: ["name", "age"] }));
    const r = run("generate", "-m", join(stories, "stories260K.gguf"), "--json-schema", schema, "-n", "40", "-t", "1", "--seed", "3", "Lily is");
    expect(r.code, r.stderr).toBe(0);
    const value = JSON.parse(r.stdout);
    expect(Object.keys(value)).toEqual(["name", "age"]);
    expect(Number.isInteger(value.age)).toBe(true);
  });

  it("exits 2 for a wrong command line (nothing ran), 1 for a run that failed, as documented", async () => {
    const gguf = join(stories, "stories260K.gguf");
    const usage: [string[], string][] = [
      [["generate", "hello"], 'Invalid option "--model"'],
      [["generate", "-m", gguf, "-t", "hot", "hello"], 'Invalid option "--temperature"'],
      [["generate", "-m", gguf, "--bogus", "hello"], "Unknown option '--bogus'"],
      [["generate", "-m", gguf], 'Invalid option "prompt"'],
      [["generate", "-m", gguf, "-t", "9", "hello"], 'Invalid option "temperature"'],
      [["generate", "-m", gguf, "--json-schema", join(scratch, "none.json"), "hello"], 'Invalid option "--json-schema"'],
      [["generate", "-m", gguf, "--backend", "cuda", "hello"], 'Invalid option "backend"'],
      [["serve", "-m", gguf, "--port", "70000"], 'Invalid option "--port"'],
      [["serve", "-m", gguf, "--allow-host", "bad host"], 'Invalid option "--allow-host"'],
      [["serve", "-m", gguf, "--chat-template", join(scratch, "none.jinja")], 'Invalid option "--chat-template"'],
      [["frobnicate"], 'unknown command "frobnicate"'],
      [[], "Usage: mlx-node <command>"],
    ];
    const notGguf = join(scratch, "not-a-model.gguf");
    writeFileSync(notGguf, "plain text, not a model");
    const taken = createNetServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
    const takenPort = String((taken.address() as AddressInfo).port);
    const [missing, corrupt, portInUse, help, ...results] = await Promise.all([
      runAsync("generate", "-m", join(scratch, "nope.gguf"), "hello"),
      runAsync("generate", "-m", notGguf, "hello"),
      runAsync("serve", "-m", gguf, "--threads", "1", "--port", takenPort),
      runAsync("help"),
      ...usage.map(([args]) => runAsync(...args)),
    ]);
    usage.forEach(([args, message], i) => {
      expect([results[i]!.code, results[i]!.stderr], args.join(" ")).toEqual([2, expect.stringContaining(message)]);
    });
    expect([missing!.code, missing!.stderr]).toEqual([1, expect.stringMatching(/MODEL_NOT_FOUND: Model not found: .*nope\.gguf/)]);
    expect([corrupt!.code, corrupt!.stderr]).toEqual([1, expect.stringContaining("BAD_WEIGHTS")]);
    expect([portInUse!.code, portInUse!.stderr]).toEqual([1, expect.stringContaining("EADDRINUSE")]);
    taken.close();
    expect(help!.code).toBe(0);
  });
});

describe("mlx-node info", () => {
  it("says which backends run here, and why MLX does not where it does not", () => {
    const r = run("info");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^platform: \w+-\w+, Node v\d+/);
    expect(r.stdout).toMatch(/gguf: available \(nodeLlamaCpp \d+\.\d+\.\d+\)/);
    if (mlxAvailable) expect(r.stdout).toMatch(/mlx: available \(device (cpu|gpu), mlxVersion \d+\.\d+\.\d+, blas \S+ \((linked|MLX_NODE_BLAS)[^)]*\)\)/);
    else expect(r.stdout).toContain(mlxSkipReason);
  });
});
