/**
 * `npm run prebuild` writes prebuilds/<platform>-<arch>/ with prebuildify, and node-gyp-build then
 * loads that binary with no local build present; the install hook sees it and builds nothing.
 *
 * Runs in a scratch copy of the package so the working tree's build/ is untouched. The copy is
 * built with CMAKE_PREFIX_PATH cleared, so without mlx-c unless it sits in a default prefix: the
 * prebuild mechanism is the same either way, and the small build keeps this test under a minute.
 */
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, rmSync, symlinkSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const repo = join(import.meta.dirname, "..");
const scratch = join(repo, "tests", ".tmp", `prebuild-${process.pid}`);
const require = createRequire(import.meta.url);
const env = { ...process.env };
delete env.CMAKE_PREFIX_PATH;

describe("prebuilt binaries", () => {
  let prebuild: ReturnType<typeof spawnSync>;

  beforeAll(() => {
    rmSync(scratch, { recursive: true, force: true });
    mkdirSync(scratch, { recursive: true });
    for (const entry of ["package.json", "CMakeLists.txt", "native", "scripts"]) {
      cpSync(join(repo, entry), join(scratch, entry), { recursive: true });
    }
    symlinkSync(join(repo, "node_modules"), join(scratch, "node_modules"), "dir");
    prebuild = spawnSync("npm", ["run", "prebuild"], { cwd: scratch, env, encoding: "utf8", timeout: 300_000 });
    // What is left must be the prebuild alone: no local build for node-gyp-build to fall back on.
    rmSync(join(scratch, "build"), { recursive: true, force: true });
  }, 320_000);

  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  it("npm run prebuild writes prebuilds/<platform>-<arch>/mlx-node.node", () => {
    expect(prebuild.status, `${prebuild.stdout}\n${prebuild.stderr}`).toBe(0);
    expect(existsSync(join(scratch, "prebuilds", `${process.platform}-${process.arch}`, "mlx-node.node"))).toBe(true);
  });

  it("node-gyp-build loads the prebuild when there is no build/ directory", () => {
    const nodeGypBuild = require("node-gyp-build") as { (dir: string): Record<string, unknown>; path(dir: string): string };
    expect(nodeGypBuild.path(scratch)).toBe(join(scratch, "prebuilds", `${process.platform}-${process.arch}`, "mlx-node.node"));
    const addon = nodeGypBuild(scratch);
    // Without CMAKE_PREFIX_PATH, mlx-c is found only in a default prefix (Homebrew, /usr/local).
    expect(typeof addon.mlx).toBe("boolean");
    if (!addon.mlx) expect(addon.mlxUnavailableReason).toBe("mlx-c was not found at build time");
    else (addon.shutdown as () => void)(); // an MLX build: stop its engine thread before exit
  });

  it("the install hook keeps the prebuild and builds nothing", () => {
    const install = spawnSync(process.execPath, [join(scratch, "scripts", "install.mjs")], { cwd: scratch, env, encoding: "utf8" });
    expect(install.status, install.stderr).toBe(0);
    expect(install.stdout).toContain(join("prebuilds", `${process.platform}-${process.arch}`, "mlx-node.node"));
    expect(existsSync(join(scratch, "build"))).toBe(false);
  });
});
