#!/usr/bin/env node
// binding.gyp asks this script how to build against MLX: `found` (1 or 0), `include_dirs`,
// `defines`, `libraries` and `ldflags` (RUNPATH to each library's directory), one answer per call.
// The answers come from CMake itself (cmake/probe runs cmake/mlx.cmake, the search the cmake-js build
// uses), so both builds find the same mlx-c and libmlx. Without CMake or mlx-c the answer is "no MLX".
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { cmakePrefixPath } from "./cmake-prefix.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const probeDir = join(root, "build", "mlx-probe");
const resultFile = join(probeDir, "mlx.json");
const keyFile = join(probeDir, "key");

/** Runs the probe once per configure (gyp calls this script once per answer). */
function probe() {
  const prefixPath = cmakePrefixPath() ?? "";
  if (existsSync(resultFile) && existsSync(keyFile) && readFileSync(keyFile, "utf8") === prefixPath) {
    return JSON.parse(readFileSync(resultFile, "utf8"));
  }
  // A fresh directory: CMake's cache would keep what an earlier prefix path found.
  rmSync(probeDir, { recursive: true, force: true });
  mkdirSync(probeDir, { recursive: true });
  const args = ["-S", join(root, "cmake", "probe"), "-B", probeDir, "-Wno-dev"];
  if (prefixPath) args.push(`-DCMAKE_PREFIX_PATH=${prefixPath}`);
  const result = spawnSync("cmake", args, { encoding: "utf8" });
  let found = { found: false };
  if (result.error || result.status !== 0) {
    process.stderr.write(`mlx-node: CMake could not look for mlx-c (${result.error?.message ?? result.stderr.trim()}); building without the MLX engine\n`);
  } else {
    found = JSON.parse(readFileSync(resultFile, "utf8"));
    if (!found.found) process.stderr.write("mlx-node: mlx-c not found (set CMAKE_PREFIX_PATH to its install prefix); building without the MLX engine\n");
  }
  writeFileSync(resultFile, JSON.stringify(found));
  writeFileSync(keyFile, prefixPath);
  return found;
}

const mlx = probe();
const unique = (list) => [...new Set(list.filter(Boolean))];
const answers = {
  found: () => (mlx.found ? "1" : "0"),
  include_dirs: () => unique(mlx.includeDirs ?? []).join(" "),
  defines: () => unique(mlx.defines ?? []).join(" "),
  libraries: () => unique(mlx.libraries ?? []).join(" "),
  // Find libmlxc/libmlx where they were linked from, without LD_LIBRARY_PATH (as the CMake build's RUNPATH).
  ldflags: () => unique((mlx.libraries ?? []).map((library) => dirname(library))).map((dir) => `-Wl,-rpath,${dir}`).join(" "),
};
const query = process.argv[2];
if (!(query in answers)) {
  process.stderr.write(`gyp-mlx: unknown query ${query}; one of ${Object.keys(answers).join(", ")}\n`);
  process.exit(2);
}
process.stdout.write(answers[query]());
