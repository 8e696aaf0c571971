/**
 * binding.gyp and prebuilt binaries. `npm run prebuild` is prebuildify's default path: node-gyp
 * over binding.gyp, the second description of the build (CMakeLists.txt through cmake-js is the
 * first, tested by every other file). It runs in a scratch copy of the package, with
 * CMAKE_PREFIX_PATH as this run has it, so the binary has the MLX engine wherever the cmake-js build
 * has it. Then node-gyp-build loads that prebuild, the install hook keeps it, and the MLX contract
 * suite passes on it (MLX_NODE_PREBUILD, node-gyp-build's own override, points the library at the
 * scratch copy).
 *
 * node-gyp needs Node's headers and downloads them when it has none: where Node was installed with
 * its headers (`<prefix>/include/node/common.gypi`: Debian's and NodeSource's packages, the official
 * tarballs), npm_config_nodedir points node-gyp at them, so nothing is downloaded.
 */
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, rmSync, symlinkSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { backendContractSuite } from "./contract/backend.contract.js";
import { stories260kMlx } from "./contract/stories260k-mlx.js";

const repo = join(import.meta.dirname, "..");
const scratch = join(repo, "tests", ".tmp", `prebuild-${process.pid}`);
const require = createRequire(import.meta.url);
const prebuilt = join(scratch, "prebuilds", `${process.platform}-${process.arch}`, "mlx-node.node");
const nodePrefix = dirname(dirname(process.execPath));
const env = { ...process.env };
if (!env.npm_config_nodedir && existsSync(join(nodePrefix, "include", "node", "common.gypi"))) env.npm_config_nodedir = nodePrefix;
env.JOBS ??= "max"; // node-gyp compiles one file at a time unless told

// Built before the suites are collected: whether the MLX contract runs depends on this binary.
rmSync(scratch, { recursive: true, force: true });
mkdirSync(scratch, { recursive: true });
for (const entry of ["package.json", "CMakeLists.txt", "binding.gyp", "cmake", "native", "scripts"]) {
  cpSync(join(repo, entry), join(scratch, entry), { recursive: true });
}
symlinkSync(join(repo, "node_modules"), join(scratch, "node_modules"), "dir");
const started = Date.now();
const prebuild = spawnSync("npm", ["run", "prebuild"], { cwd: scratch, env, encoding: "utf8", timeout: 600_000 });
console.log(`[prebuild] npm run prebuild (node-gyp, binding.gyp): ${((Date.now() - started) / 1000).toFixed(1)} s`);
// What is left must be the prebuild alone: no local build for node-gyp-build to fall back on.
rmSync(join(scratch, "build"), { recursive: true, force: true });
// Asked in a child, so that in this process only the library loads the binary.
const probe = spawnSync(process.execPath, ["-e", `const a = require(${JSON.stringify(prebuilt)}); console.log(JSON.stringify(a)); if (a.mlx) a.shutdown();`], { encoding: "utf8" });
const addon = prebuild.status === 0 && probe.status === 0 ? (JSON.parse(probe.stdout) as { mlx: boolean; mlxUnavailableReason?: string }) : undefined;

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("prebuilt binaries (prebuildify over binding.gyp)", () => {
  it("npm run prebuild writes prebuilds/<platform>-<arch>/mlx-node.node with node-gyp, offline", () => {
    expect(prebuild.status, `${prebuild.stdout}\n${prebuild.stderr}`).toBe(0);
    expect(prebuild.stderr).toContain("gyp info ok");
    expect(existsSync(prebuilt)).toBe(true);
  });

  it("the node-gyp build has the MLX engine exactly where the cmake-js build has it", async () => {
    const { mlxAvailability } = await import("../lib/backends/mlx.js");
    expect(addon?.mlx, addon?.mlxUnavailableReason).toBe(mlxAvailability().available);
    if (addon && !addon.mlx) expect(addon.mlxUnavailableReason).toBe("mlx-c was not found at build time");
  });

  it("node-gyp-build loads the prebuild when there is no build/ directory", () => {
    const nodeGypBuild = require("node-gyp-build") as { path(dir: string): string };
    expect(nodeGypBuild.path(scratch)).toBe(prebuilt);
  });

  it("the install hook keeps the prebuild and builds nothing", () => {
    const install = spawnSync(process.execPath, [join(scratch, "scripts", "install.mjs")], { cwd: scratch, env: { ...env, CMAKE_PREFIX_PATH: addon?.mlx ? env.CMAKE_PREFIX_PATH : "" }, encoding: "utf8" });
    expect(install.status, install.stderr).toBe(0);
    expect(install.stdout).toContain(`mlx-node: using ${prebuilt}`);
    expect(existsSync(join(scratch, "build"))).toBe(false);
  });
});

if (addon?.mlx) {
  // Every later load in this file takes the node-gyp binary.
  process.env.MLX_NODE_PREBUILD = scratch;
  const { MlxBackend } = await import("../lib/backends/mlx.js");
  describe("the node-gyp build", () => {
    it("is the binary the library loads", async () => {
      const { nativeStatus } = await import("../lib/native.js");
      expect(nativeStatus().available).toBe(true);
      const loaded = Object.keys(require.cache).filter((path) => path.endsWith(".node"));
      expect(loaded).toEqual([prebuilt]);
    });
  });
  backendContractSuite("mlx (node-gyp build)", () => new MlxBackend(), stories260kMlx);
} else {
  describe("mlx contract (node-gyp build)", () => it.skip(`skipped: the node-gyp build has no MLX engine (${addon?.mlxUnavailableReason ?? "no build"})`, () => undefined));
}
