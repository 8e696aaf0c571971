/**
 * Prints, after the run, how many MLX-engine tests ran and how many were skipped and why, then a
 * plain "N passed, N failed, N skipped" line for CI logs. It also counts the checks against the Python
 * references: tests whose suite or name mentions the tool ("mlx-lm", "transformers", "gguf-py",
 * "huggingface_hub", "jsonschema"). MLX tests are the files named mlx*.test.ts
 * and, in other files, the tests under a suite whose name mentions MLX (chat, JSON, concurrency, ...).
 */
import { basename } from "node:path";
import type { Reporter, TestModule } from "vitest/node";
import { mlxAvailability } from "../../lib/backends/mlx.js";
import { pythonModules } from "./python.js";

export default class SummaryReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    const all = { passed: 0, failed: 0, skipped: 0 };
    const mlx = { passed: 0, failed: 0, skipped: 0 };
    const reference = { passed: 0, failed: 0, skipped: 0 };
    for (const module of modules) {
      const mlxFile = basename(module.moduleId).startsWith("mlx");
      for (const test of module.children.allTests()) {
        const isMlx = mlxFile || /(^|[^\w-])mlx([^\w-]|$)/i.test(test.fullName); // "MLX", not "mlx-node"
        const state = test.result().state;
        const key = state === "passed" ? "passed" : state === "failed" ? "failed" : "skipped";
        all[key]++;
        if (isMlx) mlx[key]++;
        if (/\b(mlx-lm|mlx_lm|transformers|gguf-py|huggingface_hub|jsonschema)\b/i.test(test.fullName)) reference[key]++;
      }
    }
    const availability = mlxAvailability();
    const why = availability.available ? "" : ` (skipped because: ${availability.reason})`;
    console.log(`\nMLX engine tests: ${mlx.passed + mlx.failed} ran, ${mlx.skipped} skipped${why}`);
    const python = pythonModules(["mlx_lm", "transformers", "gguf"]);
    const pythonWhy = python.available ? "" : ` (skipped because: ${python.reason})`;
    console.log(`Python reference checks: ${reference.passed + reference.failed} ran, ${reference.skipped} skipped${pythonWhy}`);
    console.log(`tests: ${all.passed} passed, ${all.failed} failed, ${all.skipped} skipped`);
  }
}
