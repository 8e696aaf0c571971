/**
 * MLX_NODE_BLAS (native/blas.h): with `openblas`, libmlx's float32 matrix products call OpenBLAS
 * instead of the reference BLAS bundled with the `mlx[cpu]` wheel. The switch is read once at addon
 * load, so each setting runs in a child node process of the compiled package (dist/, built by
 * `npm test`'s pretest). Checked: the engine reports OpenBLAS; glibc really bound libmlx's
 * cblas_sgemm to it (LD_DEBUG=bindings); float32 models still match mlx-lm (which runs the
 * reference BLAS) within the conformance bound, greedy tokens equal; a library that cannot be used
 * leaves MLX unavailable with a reason naming it, never a crash. Skips, printing why, off
 * Linux/glibc, without libopenblas.so.0 (Debian: libopenblas0-pthread), MLX or mlx-lm.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MlxBackend } from "../lib/backends/mlx.js";
import { TOKENIZER_SOURCE } from "./reference/tiny-models.js";
import { conformanceAvailability, conformanceReferences, maxAbsDiff, type ConformanceReference, type ConformanceSpec } from "./support/conformance.js";
import { BOUNDS } from "./support/conformance-suite.js";
import { mlxAvailable, mlxSkipReason } from "./support/mlx.js";

const entry = fileURLToPath(new URL("../dist/lib/index.js", import.meta.url));

// Float32 cases of tests/mlx-conformance.test.ts, spelled as there so they share its cached references.
const CASES: { name: string; spec: ConformanceSpec }[] = [
  { name: "llama f32 untied, GQA 4:2", spec: { family: "llama", seed: 1 } },
  { name: "qwen3 f32 tied, q/k norms, head_dim 32", spec: { family: "qwen3", seed: 17, config: { tie_word_embeddings: true } } },
  {
    name: "llama f32 700-token prompt (two prefill chunks), layer_types window 16",
    spec: { family: "llama", seed: 46, prompt_length: 700, config: { sliding_window: 16, layer_types: ["full_attention", "sliding_attention", "sliding_attention"] } },
  },
  // Quantized weights: prompt chunks dequantize, then multiply in float32 (cblas_sgemm).
  { name: "llama 4-bit g64", spec: { family: "llama", seed: 9, quantization: { bits: 4, group_size: 64 } } },
];

function openBlasPresent(): boolean {
  for (const ldconfig of ["ldconfig", "/sbin/ldconfig"]) {
    const r = spawnSync(ldconfig, ["-p"], { encoding: "utf8" });
    if (r.status === 0) return /\blibopenblas\.so\.0\b/.test(r.stdout);
  }
  return false;
}

const glibc = process.platform === "linux" && Boolean((process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header?.glibcVersionRuntime);
const python = conformanceAvailability();
const skipReason = !mlxAvailable ? mlxSkipReason : !glibc ? "MLX_NODE_BLAS needs Linux with glibc"
  : !openBlasPresent() ? "libopenblas.so.0 is not installed (Debian/Ubuntu: apt-get install libopenblas0-pthread)"
    : !python.available ? python.reason : !existsSync(join(TOKENIZER_SOURCE, "tokenizer.json")) ? `the tiny models' tokenizer is missing (${TOKENIZER_SOURCE})` : "";
if (skipReason) console.warn(`[mlx-node] MLX_NODE_BLAS tests skipped: ${skipReason}`);

const scratch = mkdtempSync(join(tmpdir(), "mlx-node-blas-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/**
 * Runs `body` in a child node process with MLX_NODE_BLAS=`blas` (the package's exports in scope,
 * `args` parsed from JSON, `out` a scratch directory); returns what it printed as JSON.
 */
function child(blas: string, body: string, args: unknown = null, env: NodeJS.ProcessEnv = {}): { result: Record<string, unknown>; stderr: string } {
  const script = `
    const { MlxBackend, info, BackendUnavailableError } = await import(${JSON.stringify(entry)});
    const { writeFileSync } = await import("node:fs");
    const args = JSON.parse(process.argv[1]);
    const out = ${JSON.stringify(scratch)};
    const result = {};
    ${body}
    console.log(JSON.stringify(result));`;
  const base = { ...process.env };
  // The thread count checked is the engine's own choice.
  for (const name of ["OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"]) delete base[name];
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script, JSON.stringify(args)], {
    encoding: "utf8", timeout: 120_000, env: { ...base, MLX_NODE_BLAS: blas, ...env },
  });
  expect(r.signal, r.stderr).toBeNull();
  expect(r.status, r.stderr).toBe(0);
  return { result: JSON.parse(r.stdout.trim().split("\n").at(-1) ?? "{}"), stderr: r.stderr };
}

describe.skipIf(skipReason !== "")("MLX_NODE_BLAS=openblas conformance (mlx-lm)", () => {
  let references: ConformanceReference[] = [];
  let run: { result: Record<string, unknown>; ldDebug: string };

  beforeAll(async () => {
    references = conformanceReferences(CASES.map((c) => c.spec), TOKENIZER_SOURCE, python.mlxLm, (await MlxBackend.runtimeInfo()).device).references;
    // One child: every case's logits over prompt + greedy[:-1] (as the conformance suite) and its greedy run.
    const body = `
      for (const [i, c] of args.entries()) {
        const mlx = new MlxBackend();
        await mlx.load(c.modelDir);
        const rows = await mlx.logits([...c.prompt, ...c.greedy.slice(0, -1)]);
        writeFileSync(out + "/" + i + ".f32", Buffer.concat(rows.map((r) => Buffer.from(r.buffer, r.byteOffset, r.byteLength))));
        (result.greedy ??= []).push((await mlx.generate(c.prompt, { maxTokens: c.greedy.length, temperature: 0, ignoreEos: true })).tokens);
        await mlx.unload();
      }
      result.runtime = await MlxBackend.runtimeInfo();`;
    const ldDebug = join(scratch, "ld");
    const cases = references.map((r) => ({ modelDir: r.modelDir, prompt: r.prompt, greedy: r.greedy }));
    const { result } = child("openblas", body, cases, { LD_DEBUG: "bindings", LD_DEBUG_OUTPUT: ldDebug });
    // glibc writes <LD_DEBUG_OUTPUT>.<pid>.
    const logs = readdirSync(scratch).filter((f) => f.startsWith("ld."));
    run = { result, ldDebug: logs.map((f) => readFileSync(join(scratch, f), "utf8")).join("") };
  }, 600_000);

  it("reports OpenBLAS, with one thread unless OPENBLAS_NUM_THREADS says otherwise", () => {
    const { blas } = run.result.runtime as { blas: { library: string; source: string; openblas?: { config: string; threads: number } } };
    expect(blas.source).toBe("MLX_NODE_BLAS");
    expect(blas.library).toMatch(/libopenblas/);
    expect(blas.openblas?.config).toMatch(/^OpenBLAS \d+\.\d+/);
    expect(blas.openblas?.threads).toBe(1);
  });

  it("glibc bound libmlx's cblas_sgemm to OpenBLAS (LD_DEBUG=bindings)", () => {
    const sgemm = run.ldDebug.split("\n").filter((l) => /binding file \S*libmlx\.so\b.*symbol `cblas_sgemm'/.test(l));
    expect(sgemm.length, "libmlx bound cblas_sgemm once").toBe(1);
    expect(sgemm[0]).toMatch(/ to \S*libopenblas\.so\.0\b/);
  });

  CASES.forEach((c, i) => {
    it(`${c.name}: logits within ${BOUNDS.F32} of mlx-lm's, greedy tokens equal`, () => {
      const ref = references[i];
      const bytes = readFileSync(join(scratch, `${i}.f32`));
      const flat = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
      const vocab = ref.logits[0].length;
      const rows = Array.from({ length: flat.length / vocab }, (_, r) => flat.subarray(r * vocab, (r + 1) * vocab));
      const diff = maxAbsDiff(rows, ref.logits);
      console.log(`[${c.name}, OpenBLAS] max |logit diff| ${diff.toExponential(2)} (bound ${BOUNDS.F32})`);
      expect(diff).toBeLessThanOrEqual(BOUNDS.F32);
      expect((run.result.greedy as number[][])[i]).toEqual(ref.greedy);
    });
  });
});

describe.skipIf(!mlxAvailable || !glibc)("MLX_NODE_BLAS that cannot be honoured", () => {
  it("without it, the engine reports libmlx's own BLAS", async () => {
    const { blas } = await MlxBackend.runtimeInfo();
    if (process.env.MLX_NODE_BLAS) expect(blas.source).toBe("MLX_NODE_BLAS");
    else expect(blas).toMatchObject({ source: "linked", library: expect.stringMatching(/\S/) });
  });

  // Each value in its own process: the switch is read once, at load.
  const unavailable = (value: string) => child(value, `
    const { backends } = await info();
    result.mlx = backends.mlx;
    result.gguf = backends.gguf.available;
    try { await new MlxBackend().load(${JSON.stringify(TOKENIZER_SOURCE)}); } catch (e) { result.load = { name: e.constructor.name, code: e.code, message: e.message, isClass: e instanceof BackendUnavailableError }; }`).result;

  it("a missing file: MLX unavailable with the path and the loader's reason, GGUF still available", () => {
    const missing = join(scratch, "no-such-blas.so");
    const r = unavailable(missing);
    expect(r.mlx).toEqual({ available: false, reason: `MLX_NODE_BLAS=${missing}: cannot load ${missing} (${missing}: cannot open shared object file: No such file or directory), or unset MLX_NODE_BLAS for libmlx's own BLAS` });
    expect(r.gguf).toBe(true);
    expect(r.load).toMatchObject({ name: "BackendUnavailableError", code: "BACKEND_UNAVAILABLE", isClass: true });
    expect((r.load as { message: string }).message).toContain(missing);
  });

  it("a library without CBLAS, and a value that is neither \"openblas\" nor a path", () => {
    const libc = "/lib/x86_64-linux-gnu/libc.so.6";
    const notCblas = existsSync(libc) ? libc : "/lib/aarch64-linux-gnu/libc.so.6";
    expect(unavailable(notCblas).mlx).toEqual({ available: false, reason: `MLX_NODE_BLAS=${notCblas}: ${notCblas} does not export cblas_sgemm (not a CBLAS library)` });
    expect(unavailable("OpenBlas").mlx).toEqual({ available: false, reason: 'MLX_NODE_BLAS must be "openblas" or the path of a shared library (with a "/"), not "OpenBlas"' });
  });
});
