#!/usr/bin/env node
// prebuildify drives node-gyp (`rebuild --target=… --release`); this shim answers that call with
// our one build, cmake-js (scripts/build-native.mjs), so prebuilds come from the same CMakeLists.txt.
// Node-API binaries do not depend on the target version, so --target and --devdir are ignored.
import { spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
if (args[0] !== "rebuild") {
  console.error(`node-gyp-shim: only "rebuild" is supported, got ${args.join(" ")}`);
  process.exit(2);
}
rmSync(join(root, "build"), { recursive: true, force: true });
const env = { ...process.env, ...(args.includes("--debug") ? { MLX_NODE_DEBUG_BUILD: "1" } : {}) };
const result = spawnSync(process.execPath, [join(root, "scripts", "build-native.mjs")], { cwd: root, stdio: "inherit", env });
process.exit(result.status ?? 1);
