#!/usr/bin/env node
// Builds the native addon with cmake-js into build/Release. Run by `npm install` when no prebuilt
// binary fits this platform, and by `npm run build:native`. Needs cmake and a C++17 compiler; uses
// Node-API headers from the node-api-headers package, so nothing is downloaded.
// MLX is found through find_package(MLXC): set CMAKE_PREFIX_PATH to mlx-c's install prefix.
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { cmakePrefixPath } from "./cmake-prefix.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);

const cmake = spawnSync("cmake", ["--version"], { encoding: "utf8" });
if (cmake.error || cmake.status !== 0) {
  console.error(
    "mlx-node: building the native addon needs CMake 3.20+ and a C++17 compiler.\n" +
      "  Debian/Ubuntu: apt-get install cmake g++    macOS: xcode-select --install && brew install cmake\n" +
      "Then run: npm run build:native",
  );
  process.exit(1);
}

const cmakeJs = join(dirname(require.resolve("cmake-js/package.json")), "bin", "cmake-js");
const common = ["--directory", root, "--out", join(root, "build")];
const prefixPath = cmakePrefixPath();
if (prefixPath) common.push(`--CDCMAKE_PREFIX_PATH=${prefixPath}`);
if (process.env.MLX_NODE_DEBUG_BUILD) common.push("--debug");

// Configure every time (it is cheap, and the build after it only recompiles what changed): an
// existing build/ must notice an mlx-c installed, or a CMAKE_PREFIX_PATH set, since it was made.
for (const command of ["configure", "build"]) {
  const result = spawnSync(process.execPath, [cmakeJs, command, ...common], { cwd: root, stdio: "inherit" });
  if (result.status !== 0) process.exit(result.status ?? 1);
}
