/**
 * Process lifecycle with the MLX engine running: exiting in the middle of a generation (by
 * process.exit or an uncaught exception) ends the process normally, never with a native crash.
 * Runs the compiled package (dist/, built by `npm test`'s pretest) in a child process.
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { mlxAvailable } from "./support/mlx.js";

const entry = fileURLToPath(new URL("../dist/lib/index.js", import.meta.url));
const model = fileURLToPath(new URL("../../shared/models/stories260K/hf-f32", import.meta.url));

function runChild(ending: string): { status: number | null; signal: string | null; stderr: string } {
  const script = `
    const { MlxBackend } = await import(${JSON.stringify(entry)});
    const mlx = new MlxBackend();
    await mlx.load(${JSON.stringify(model)});
    let n = 0;
    for await (const _ of mlx.generateStream("Once upon a time", { maxTokens: 1500, ignoreEos: true, temperature: 0.9 })) {
      if (++n === 20) { ${ending} }
    }`;
  const child = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 60_000 });
  return { status: child.status, signal: child.signal, stderr: child.stderr };
}

describe.skipIf(!mlxAvailable)("MLX engine and process exit", () => {
  it("process.exit() during generation exits with the requested code", () => {
    const r = runChild("process.exit(3);");
    expect(r.signal).toBeNull();
    expect(r.status).toBe(3);
  });

  it("an uncaught exception during generation exits with code 1 and the error, not a crash", () => {
    const r = runChild('throw new Error("boom from the consumer");');
    expect(r.signal).toBeNull();
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("boom from the consumer");
  });
});
