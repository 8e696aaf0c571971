/**
 * Gate and runner for the Python references (mlx-lm, transformers, gguf-py, huggingface_hub,
 * jsonschema) that judge mlx-node in tests and benchmarks. Python is never needed at run time.
 * Tests that need it skip where it is absent, printing why (never silently); suites that check
 * against it mention the tool in their name ("(mlx-lm)", "(transformers)") so the summary counts them.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The interpreter: `MLX_NODE_PYTHON`, else `python3` on PATH. */
export const python = process.env.MLX_NODE_PYTHON ?? "python3";

/** This folder's Python scripts (tests/python), also when this file runs compiled from dist/tests/support (bench). */
const here = dirname(fileURLToPath(import.meta.url));
export const pythonScripts = existsSync(join(here, "..", "python")) ? join(here, "..", "python") : join(here, "..", "..", "..", "tests", "python");

/**
 * Where generated references and converted real models are cached, outside the repository:
 * `MLX_NODE_TEST_CACHE`, else ~/.cache/mlx-node-tests. Entries are keyed by the tool versions
 * that made them, so a version bump regenerates them.
 */
export const testCacheRoot = process.env.MLX_NODE_TEST_CACHE ?? join(homedir(), ".cache", "mlx-node-tests");

const probes = new Map<string, { available: boolean; reason: string; versions: Record<string, string> }>();

/**
 * Whether `python` can import every module named (import names: "mlx_lm", "transformers", "gguf").
 * Gives the installed versions of those that import, and a one-line reason when any does not.
 */
export function pythonModules(modules: readonly string[]): { available: boolean; reason: string; versions: Record<string, string> } {
  const key = modules.join(",");
  const cached = probes.get(key);
  if (cached) return cached;
  const code = [
    "import importlib, importlib.metadata as md, json, sys",
    "out = {}",
    "for name in sys.argv[1:]:",
    "    try:",
    "        importlib.import_module(name)",
    "        dist = {'mlx_lm': 'mlx-lm', 'huggingface_hub': 'huggingface_hub'}.get(name, name)",
    "        try: out[name] = md.version(dist)",
    "        except Exception: out[name] = 'unknown'",
    "    except Exception as e:",
    "        out[name] = None; out['!' + name] = f'{type(e).__name__}: {e}'",
    "print(json.dumps(out))",
  ].join("\n");
  const run = spawnSync(python, ["-c", code, ...modules], { encoding: "utf8", timeout: 60_000 });
  let result: { available: boolean; reason: string; versions: Record<string, string> };
  if (run.error || run.status !== 0) {
    result = { available: false, reason: `${python} did not run (${run.error?.message ?? run.stderr.trim().split("\n").pop()})`, versions: {} };
  } else {
    const found = JSON.parse(run.stdout) as Record<string, string | null>;
    const missing = modules.filter((m) => found[m] === null);
    const versions: Record<string, string> = {};
    for (const m of modules) if (found[m]) versions[m] = found[m] as string;
    result = missing.length
      ? { available: false, reason: `Python module(s) ${missing.join(", ")} not importable by ${python} (${missing.map((m) => found[`!${m}`]).join("; ")}); install tests/python/requirements.txt`, versions }
      : { available: true, reason: "", versions };
  }
  probes.set(key, result);
  if (!result.available) console.warn(`[mlx-node] Python reference checks skipped: ${result.reason}`);
  return result;
}

/**
 * Runs a script of tests/python with arguments; returns its stdout. Throws with the script's stderr
 * when it fails, so a broken reference is a failed test, not a skip.
 */
export function runPython(script: string, args: readonly string[], options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): string {
  const run = spawnSync(python, [join(pythonScripts, script), ...args], {
    encoding: "utf8",
    timeout: options.timeoutMs ?? 600_000,
    maxBuffer: 1 << 28,
    env: { ...process.env, HF_HUB_OFFLINE: "1", TOKENIZERS_PARALLELISM: "false", ...options.env },
  });
  if (run.error) throw new Error(`${script}: ${run.error.message}`);
  if (run.status !== 0) throw new Error(`${script} exited ${run.status}:\n${run.stderr.slice(-4000)}`);
  return run.stdout;
}

/** A folder under the test cache (made if missing). */
export function testCacheDir(...parts: string[]): string {
  const dir = join(testCacheRoot, ...parts);
  mkdirSync(dir, { recursive: true });
  return dir;
}
