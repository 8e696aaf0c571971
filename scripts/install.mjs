#!/usr/bin/env node
// `npm install` hook: nothing to do when a prebuilt binary (prebuilds/<platform>-<arch>/) or a
// local build fits this machine, as node-gyp-build would load it; otherwise build with cmake-js.
// (node-gyp-build's own install command always ends in `node-gyp rebuild`, which needs a
// binding.gyp; CMakeLists.txt is our only build description.)
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);

if (!process.env.MLX_NODE_FORCE_BUILD) {
  try {
    const found = require("node-gyp-build").path(root);
    console.log(`mlx-node: using ${found}`);
    process.exit(0);
  } catch {
    // No binary fits: build one.
  }
}
const result = spawnSync(process.execPath, [join(root, "scripts", "build-native.mjs")], { stdio: "inherit" });
process.exit(result.status ?? 1);
