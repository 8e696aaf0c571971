/**
 * Download throughput of `pullModel` over loopback, against the test hub (tests/support/fake-hub.ts)
 * serving one random LFS file, next to a bare `fetch` of the same bytes into nothing: the difference is
 * our cost (writing the partial file, checking sha256 by reading it back, renaming, linking).
 *   npm run build:ts && node dist/bench/hub-download.js [MiB=128]
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pullModel } from "../lib/hub/pull.js";
import { startFakeHub } from "../tests/support/fake-hub.js";

const mib = Number(process.argv[2] ?? 128);
const data = randomBytes(mib * 2 ** 20);
const hub = await startFakeHub([{ id: "bench/big", files: { "big-F16.gguf": data } }]);
const rate = (ms: number) => `${((mib / ms) * 1000).toFixed(0)} MiB/s (${ms.toFixed(0)} ms)`;
try {
  for (let round = 1; round <= 3; round++) {
    let t = performance.now();
    const response = await fetch(`${hub.endpoint}/bench/big/resolve/main/big-F16.gguf`);
    const reader = response.body!.getReader();
    while (!(await reader.read()).done);
    const bare = performance.now() - t;
    const cacheDir = mkdtempSync(join(tmpdir(), "mlx-node-bench-hub-"));
    t = performance.now();
    await pullModel("hf:bench/big/big-F16.gguf", { cacheDir, endpoint: hub.endpoint, token: "", offline: false });
    const pulled = performance.now() - t;
    rmSync(cacheDir, { recursive: true, force: true });
    console.log(`round ${round}: ${mib} MiB  bare fetch ${rate(bare)}  pullModel ${rate(pulled)}`);
  }
} finally {
  await hub.close();
}
