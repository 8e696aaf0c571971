/**
 * The package as a user gets it: `npm pack`, then `npm install` of the tarball into a fresh app in
 * the system temp directory (so nothing resolves through this repository's node_modules), and
 * everything below runs as that app: an ESM import, a type check of the public API under
 * moduleResolution node16 and bundler, `info()`, generation on the GGUF model and, where this
 * repository's addon has the MLX engine, on an MLX directory (the install gets CMAKE_PREFIX_PATH as
 * this run has it), the CLI through `npx mlx-node`, and the server started and stopped.
 * A second app installs with `--ignore-scripts` (npm's setting where install scripts are not
 * allowed): the import works, GGUF runs, and `info()` gives the command that builds the addon.
 * A third installs this repository's HEAD as a git dependency.
 *
 * Offline: each app gets a lockfile made from this repository's (the same versions it is tested
 * with), so npm takes every tarball from its cache. MLX_NODE_CONSUMER_ONLINE=1 resolves against
 * the registry instead (the release workflow, where platform packages differ from this lockfile's);
 * MLX_NODE_CONSUMER_EXPECT_PREBUILD=1 says the tarball carries prebuilds (the release workflow).
 * Run it on its own: `npx vitest run tests/consumer.test.ts` (it packs, so it runs `prepare`).
 */
import { spawn, spawnSync, type SpawnSyncReturns } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mlxAvailable } from "./support/mlx.js";

const repo = join(import.meta.dirname, "..");
const windows = process.platform === "win32";
const models = join(repo, "..", "shared", "models", "stories260K");
const GGUF = join(models, "stories260K.gguf");
const MLX_DIR = join(models, "hf-f32");
// The reference greedy continuations (the release workflow has only the GGUF file: it then checks
// that text is generated, not which).
const expectedFile = join(models, "expected", "greedy-once-upon-a-time.json");
const expected = existsSync(expectedFile)
  ? (JSON.parse(readFileSync(expectedFile, "utf8")) as { gguf_llama_cpp: { text: string }; "hf-f32_numpy": { text: string } })
  : undefined;
const mlxDirPresent = existsSync(MLX_DIR);
if (mlxAvailable && !mlxDirPresent) console.warn(`[consumer] MLX model directory check skipped: ${MLX_DIR} is absent`);
/** Greedy output starts as the reference does (the first 40 characters), where the reference is here. */
function expectGreedy(text: string, reference: string | undefined): void {
  expect(text.length, text).toBeGreaterThan(20);
  if (reference !== undefined) expect(reference.startsWith(text.slice(0, 40)), text).toBe(true);
}
const online = process.env.MLX_NODE_CONSUMER_ONLINE === "1";
/** The release workflow packs every platform's prebuild: installs must keep this platform's. */
const prebuildShipped = process.env.MLX_NODE_CONSUMER_EXPECT_PREBUILD === "1";
const tsc = join(repo, "node_modules", "typescript", "bin", "tsc");

const work = mkdtempSync(join(tmpdir(), "mlx-node-consumer-"));
const app = join(work, "app");
const bare = join(work, "app-ignore-scripts");
const fromGit = join(work, "app-git");
// A git dependency is the committed HEAD (in CI, the commit under test).
const head = spawnSync("git", ["rev-parse", "HEAD"], { cwd: repo, encoding: "utf8" });
const gitSpec = head.status === 0 ? `git+${pathToFileURL(repo).href}#${head.stdout.trim()}` : undefined;

function run(command: string, args: string[], cwd: string, timeout = 120_000, env: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> {
  // npm and npx are .cmd scripts on Windows, which only a shell runs.
  return spawnSync(command, args, { cwd, encoding: "utf8", timeout, shell: windows && command !== process.execPath, env: { ...process.env, npm_config_update_notifier: "false", ...env } });
}
const output = (r: SpawnSyncReturns<string>) => `exit ${r.status}\n${r.stdout}\n${r.stderr}`;

/** A fresh app depending on `spec` (the tarball, or this repository as a git dependency), with a lockfile of this repository's runtime dependencies. */
function makeApp(dir: string, spec: string): void {
  mkdirSync(dir, { recursive: true });
  const manifest = { name: "consumer-app", version: "1.0.0", private: true, type: "module", dependencies: { "mlx-node": spec } };
  writeFileSync(join(dir, "package.json"), JSON.stringify(manifest, null, 2));
  if (online) return;
  const lock = JSON.parse(readFileSync(join(repo, "package-lock.json"), "utf8")) as { packages: Record<string, Record<string, unknown>> };
  const self = lock.packages[""]!;
  const packages: Record<string, unknown> = {
    "": { name: manifest.name, version: manifest.version, dependencies: manifest.dependencies },
    "node_modules/mlx-node": {
      version: self.version, resolved: spec, hasInstallScript: true, license: self.license, engines: self.engines, bin: self.bin,
      dependencies: self.dependencies, optionalDependencies: self.optionalDependencies,
    },
  };
  // mlx-node's dependencies sit where they sit in this repository (hoisted); dev-only ones are left out.
  for (const [path, entry] of Object.entries(lock.packages)) {
    if (path && !entry.dev) packages[path] = { ...entry, devOptional: undefined };
  }
  writeFileSync(join(dir, "package-lock.json"), JSON.stringify({ name: manifest.name, version: manifest.version, lockfileVersion: 3, requires: true, packages }, null, 2));
}

function npmInstall(dir: string, flags: string[] = [], env: NodeJS.ProcessEnv = {}) {
  const started = Date.now();
  const result = run("npm", ["install", online ? "--prefer-offline" : "--offline", "--no-audit", "--no-fund", "--foreground-scripts", ...flags], dir, 600_000, env);
  console.log(`[consumer] npm install ${flags.join(" ")} in ${basename(dir)}: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return result;
}

/** Runs an ESM script as the app (`import ... from "mlx-node"`) and returns what it prints as JSON. */
function asApp<T>(dir: string, name: string, source: string): T {
  writeFileSync(join(dir, name), source);
  const result = run(process.execPath, [name], dir);
  expect(result.status, output(result)).toBe(0);
  return JSON.parse(result.stdout) as T;
}

const GENERATE = `
import { loadModel } from "mlx-node";
const model = await loadModel(process.env.MODEL, { threads: 1 });
const result = await model.generate("Once upon a time", { maxTokens: 20, temperature: 0 });
await model.unload();
console.log(JSON.stringify({ backend: model.selection.backend, text: result.text }));
`;

/** Uses the public API as an app would; it only has to type-check. */
const TYPED_USE = `
import { createServer, GgufBackend, info, loadModel, MlxBackend, minimumMaxTokens, ModelNotFoundError, type GenerateOptions, type InferenceBackend } from "mlx-node";

const options: GenerateOptions = { maxTokens: 8, temperature: 0, stop: ["\\n"], signal: AbortSignal.timeout(1000) };
export async function use(path: string): Promise<string> {
  const platform = await info();
  const backend: InferenceBackend = platform.backends.mlx.available ? new MlxBackend() : new GgufBackend();
  await backend.load(path, { contextSize: 256 });
  const model = await loadModel(path);
  let text = "";
  for await (const chunk of model.generateStream("Once", options)) text += chunk.text;
  const server = createServer(model, { modelId: "m" });
  server.close();
  const n: number = minimumMaxTokens({ type: "object", properties: { a: { type: "string" } }, required: ["a"] });
  try { await loadModel("missing.gguf"); } catch (error) { if (error instanceof ModelNotFoundError) text += error.code + n; }
  return text + (await backend.generate("Once", options)).text;
}
`;

describe("the package as a user installs it (consumer app)", () => {
  let tarball = "";
  let packed: SpawnSyncReturns<string>;
  let install: SpawnSyncReturns<string>;

  beforeAll(() => {
    const started = Date.now();
    packed = run("npm", ["pack", "--json", "--pack-destination", work], repo, 300_000);
    console.log(`[consumer] npm pack: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    if (packed.status === 0) tarball = join(work, (JSON.parse(packed.stdout) as Array<{ filename: string }>)[0]!.filename);
    makeApp(app, `file:${tarball}`);
    install = npmInstall(app);
  }, 900_000);

  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it("npm pack ships what install and run time need, and no tests, benches, fixtures or source maps", () => {
    expect(packed.status, output(packed)).toBe(0);
    const files = (JSON.parse(packed.stdout) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path);
    for (const needed of ["package.json", "dist/lib/index.js", "dist/lib/index.d.ts", "dist/lib/cli/main.js", "scripts/install.mjs", "scripts/build-native.mjs", "CMakeLists.txt", "binding.gyp", "native/sources.json", "native/addon.cpp"]) {
      expect(files, needed).toContain(needed);
    }
    expect(files.filter((f) => /^(tests|bench|fixtures|dist\/tests|dist\/bench)\/|\.map$|^\.ci|^\.github/.test(f))).toEqual([]);
  });

  it("npm install of the tarball runs the install script and ends with one line naming the binary", () => {
    expect(install.status, output(install)).toBe(0);
    const line = install.stdout.split("\n").filter((l) => l.startsWith("mlx-node: using "));
    expect(line, install.stdout).toHaveLength(1);
    expect(line[0]).toContain(mlxAvailable ? "with the MLX engine" : "npx mlx-node info");
    if (prebuildShipped) expect(line[0]).toContain(join("prebuilds", `${process.platform}-${process.arch}`));
  });

  it("imports as ESM and info() reports the backends", () => {
    const platform = asApp<{ backends: { mlx: { available: boolean; reason?: string }; gguf: { available: boolean } } }>(
      app, "info.mjs", `import { info } from "mlx-node";\nconsole.log(JSON.stringify(await info()));\n`,
    );
    expect(platform.backends.gguf.available).toBe(true);
    expect(platform.backends.mlx.available, platform.backends.mlx.reason).toBe(mlxAvailable);
    if (!mlxAvailable) expect(platform.backends.mlx.reason).toContain("brew install mlx-c");
  });

  it.each(["node16", "bundler"])("type-checks a file using the public API (moduleResolution %s)", (resolution) => {
    writeFileSync(join(app, "use.ts"), TYPED_USE);
    const config = {
      compilerOptions: {
        module: resolution === "node16" ? "node16" : "esnext", moduleResolution: resolution, target: "es2022", strict: true,
        noEmit: true, types: ["node"], typeRoots: [join(repo, "node_modules", "@types")],
        // node16 also checks the declarations themselves (skipLibCheck off, the strictest app): they must
        // not reach node-llama-cpp's, an optional dependency whose 3.22.1 declarations fail on their own
        // (TS2339, TS7016). bundler keeps `tsc --init`'s skipLibCheck, which halves the time.
        skipLibCheck: resolution !== "node16",
      },
      files: ["use.ts"],
    };
    writeFileSync(join(app, `tsconfig.${resolution}.json`), JSON.stringify(config));
    const result = run(process.execPath, [tsc, "-p", `tsconfig.${resolution}.json`], app);
    expect(result.status, output(result)).toBe(0);
  });

  it("generates on the GGUF model", () => {
    writeFileSync(join(app, "generate.mjs"), GENERATE);
    const result = spawnSync(process.execPath, ["generate.mjs"], { cwd: app, encoding: "utf8", env: { ...process.env, MODEL: GGUF } });
    expect(result.status, output(result)).toBe(0);
    const out = JSON.parse(result.stdout) as { backend: string; text: string };
    expect(out.backend).toBe("gguf");
    expectGreedy(out.text, expected?.gguf_llama_cpp.text);
  });

  it.skipIf(!mlxAvailable || !mlxDirPresent)("generates on an MLX model directory (mlx-c given at install)", () => {
    const result = spawnSync(process.execPath, ["generate.mjs"], { cwd: app, encoding: "utf8", env: { ...process.env, MODEL: MLX_DIR } });
    expect(result.status, output(result)).toBe(0);
    const out = JSON.parse(result.stdout) as { backend: string; text: string };
    expect(out.backend).toBe("mlx");
    expectGreedy(out.text, expected?.["hf-f32_numpy"].text);
  });

  it("runs the CLI through npx mlx-node", () => {
    const result = run("npx", ["--offline", "mlx-node", "generate", "--model", GGUF, "--max-tokens", "12", "--temperature", "0", "Once upon a time"], app);
    expect(result.status, output(result)).toBe(0);
    expect(result.stdout.length, output(result)).toBeGreaterThan(20);
    if (expected) expect(expected.gguf_llama_cpp.text.startsWith(result.stdout.trim().slice(0, 40)), result.stdout).toBe(true);
  });

  it("starts the server with npx mlx-node serve, answers a completion, and stops on Ctrl-C", async () => {
    // Its own process group, so SIGINT reaches npx and the server under it, as Ctrl-C in a terminal does.
    const server = spawn("npx", ["--offline", "mlx-node", "serve", "--model", GGUF, "--port", "0"], { cwd: app, stdio: ["ignore", "ignore", "pipe"], detached: !windows, shell: windows });
    let log = "";
    const url = await new Promise<string>((resolve, reject) => {
      server.stderr.on("data", (data: Buffer) => {
        log += data.toString();
        const match = /at (http:\/\/\S+\/v1)/.exec(log);
        if (match) resolve(match[1]!);
      });
      server.once("exit", (code) => reject(new Error(`serve exited ${code}: ${log}`)));
    });
    const response = await fetch(`${url}/completions`, { method: "POST", body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 8, temperature: 0 }) });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { choices: Array<{ text: string }> };
    expect(body.choices[0]!.text.length).toBeGreaterThan(0);
    if (expected) expect(expected.gguf_llama_cpp.text.startsWith(body.choices[0]!.text)).toBe(true);
    const exit = new Promise<[number | null, string | null]>((resolve) => server.once("close", (code, signal) => resolve([code, signal])));
    if (windows) {
      // Windows has no SIGINT to send to another console's process: end the tree (npx, its shell, the server).
      spawnSync("taskkill", ["/pid", String(server.pid), "/T", "/F"]);
      await exit;
      return;
    }
    process.kill(-server.pid!, "SIGINT");
    const [code, signal] = await exit;
    // npx ends as its child did, or re-raises the SIGINT it got, as shells expect of a CLI.
    expect(code === 0 || signal === "SIGINT", `${code} ${signal}\n${log}`).toBe(true);
    expect(log).toContain("server stopped");
  });

  describe("installed with --ignore-scripts (install scripts not allowed)", () => {
    let bareInstall: SpawnSyncReturns<string>;
    beforeAll(() => {
      makeApp(bare, `file:${tarball}`);
      bareInstall = npmInstall(bare, ["--ignore-scripts"]);
    }, 600_000);

    // With prebuilds in the tarball (the release workflow) the import takes this platform's.
    const title = prebuildShipped ? "imports, runs GGUF, and MLX runs on the prebuild where it has MLX" : "imports, runs GGUF, and info() names the one command that builds the addon";
    it(title, () => {
      expect(bareInstall.status, output(bareInstall)).toBe(0);
      const platform = asApp<{ backends: { mlx: { available: boolean; reason?: string } } }>(
        bare, "info.mjs", `import { info } from "mlx-node";\nconsole.log(JSON.stringify(await info()));\n`,
      );
      if (prebuildShipped) {
        expect(platform.backends.mlx.available, platform.backends.mlx.reason).toBe(mlxAvailable);
      } else {
        expect(platform.backends.mlx.available).toBe(false);
        expect(platform.backends.mlx.reason).toMatch(/^no native binary .*`npx mlx-node build-native`/);
      }
      writeFileSync(join(bare, "generate.mjs"), GENERATE);
      const result = spawnSync(process.execPath, ["generate.mjs"], { cwd: bare, encoding: "utf8", env: { ...process.env, MODEL: GGUF } });
      expect(result.status, output(result)).toBe(0);
    });
  });
  describe("installed as a git dependency", () => {
    let gitInstall: SpawnSyncReturns<string> | undefined;
    beforeAll(() => {
      if (!gitSpec) return console.warn("[consumer] git dependency check skipped: not a git checkout");
      makeApp(fromGit, gitSpec);
      // npm clones, installs the clone's dev dependencies, runs prepare (tsc), packs by `files`, then
      // installs that. Built without MLX (CMAKE_PREFIX_PATH cleared): the tarball install above covers MLX.
      gitInstall = npmInstall(fromGit, [], { CMAKE_PREFIX_PATH: "" });
    }, 900_000);

    it.skipIf(!gitSpec)("npm builds it from the clone; it imports, runs GGUF and the CLI", () => {
      expect(gitInstall?.status, gitInstall && output(gitInstall)).toBe(0);
      writeFileSync(join(fromGit, "generate.mjs"), GENERATE);
      const result = spawnSync(process.execPath, ["generate.mjs"], { cwd: fromGit, encoding: "utf8", env: { ...process.env, MODEL: GGUF } });
      expect(result.status, output(result)).toBe(0);
      expectGreedy((JSON.parse(result.stdout) as { text: string }).text, expected?.gguf_llama_cpp.text);
      const cli = run("npx", ["--offline", "mlx-node", "info"], fromGit);
      expect(cli.status, output(cli)).toBe(0);
      expect(cli.stdout).toContain("gguf: available");
    });
  });
});
