#!/usr/bin/env node
// Builds the native addon with cmake-js into build/Release. Run by `npm install` when no prebuilt
// binary fits this platform, and by `npm run build:native`. Needs cmake and a C++17 compiler; uses
// Node-API headers from the node-api-headers package, so nothing is downloaded.
// MLX is found through find_package(MLXC): set CMAKE_PREFIX_PATH to mlx-c's install prefix.
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

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
const args = [cmakeJs, "compile", "--directory", root, "--out", join(root, "build")];
if (process.env.CMAKE_PREFIX_PATH) args.push(`--CDCMAKE_PREFIX_PATH=${process.env.CMAKE_PREFIX_PATH}`);
if (process.env.MLX_NODE_DEBUG_BUILD) args.push("--debug");

const result = spawnSync(process.execPath, args, { cwd: root, stdio: "inherit" });
process.exit(result.status ?? 1);
