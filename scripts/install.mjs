#!/usr/bin/env node
// `npm install` hook: keeps a binary that fits this machine (an earlier local build in build/Release,
// else a prebuild in prebuilds/<platform>-<arch>/: node-gyp-build's order); otherwise builds with cmake-js.
// A binary without the MLX engine does not fit when CMAKE_PREFIX_PATH is set: that asks for MLX.
// Ends with one line saying which binary is used and, without MLX, where to learn how to get it.
import { spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const nodeGypBuild = require("node-gyp-build");

/** The binary node-gyp-build would load, and whether the MLX engine is in it; undefined when none fits or it fails to load. */
function current() {
  let path;
  let addon;
  try {
    path = nodeGypBuild.path(root);
    addon = require(path);
  } catch (error) {
    if (path) {
      console.log(`mlx-node: ${path} does not load here (${error.message.split("\n")[0]}): building`);
      // A broken local build would look up to date to the build tool; a local build is loaded before any prebuild.
      if (path.startsWith(join(root, "build"))) rmSync(path, { force: true });
    }
    return undefined;
  }
  if (addon.mlx) addon.shutdown(); // stop the engine thread it started, so this script can exit
  return { path, mlx: Boolean(addon.mlx), reason: addon.mlxUnavailableReason };
}

let binary = process.env.MLX_NODE_FORCE_BUILD ? undefined : current();
if (binary && !binary.mlx && process.env.CMAKE_PREFIX_PATH) binary = undefined;
if (!binary) {
  const result = spawnSync(process.execPath, [join(root, "scripts", "build-native.mjs")], { stdio: "inherit" });
  if (result.status !== 0) process.exit(result.status ?? 1);
  binary = current();
  if (!binary) {
    console.error("mlx-node: the build finished but left no loadable addon");
    process.exit(1);
  }
}
// npm shows this only with --foreground-scripts; `info()` and MlxBackend say the same at run time.
console.log(
  `mlx-node: using ${binary.path}, ` +
    (binary.mlx ? "with the MLX engine" : `without the MLX engine (${binary.reason}): \`npx mlx-node info\` says how to get it`),
);
