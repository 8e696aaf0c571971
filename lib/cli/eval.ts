/**
 * `mlx-node eval`: runs a fixtures file against a model and reports pass rate, outputs and latency.
 * Progress goes to stderr; the markdown report to stdout, or to `<out>/eval.md` and `<out>/eval.json`.
 *
 * Exit codes, so CI can gate on it: 0 when the pass rate reaches the threshold; 1 when it does not
 * (or the model fails to load); 2 when nothing ran because of bad arguments or an invalid fixtures file.
 */
import { parseArgs } from "node:util";
import { loadModel } from "../backends/select.js";
import { progressReporter } from "./hub.js";
import { loadFixtures, FixtureError } from "../eval/fixtures.js";
import { formatMarkdown, writeReport } from "../eval/report.js";
import { runEval } from "../eval/run.js";
import { EXIT } from "./exit-codes.js";

/** Default `--threshold`: every case must pass, since a fixtures file states what must hold. */
export const DEFAULT_THRESHOLD = 1;

/** Runs `mlx-node eval` with the arguments after the command name; resolves to the exit code. */
export async function runEvalCommand(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        model: { type: "string", short: "m" },
        fixtures: { type: "string", short: "f" },
        backend: { type: "string" },
        out: { type: "string", short: "o" },
        threshold: { type: "string" },
        "context-size": { type: "string" },
        threads: { type: "string" },
      },
    }));
  } catch (error) {
    return usageError((error as Error).message);
  }
  if (!values.model) return usageError("--model <path> is required");
  if (!values.fixtures) return usageError("--fixtures <file> is required");
  const backend = values.backend ?? "auto";
  if (!["auto", "mlx", "gguf"].includes(backend)) return usageError(`--backend must be auto, mlx or gguf (got "${backend}")`);
  const threshold = values.threshold === undefined ? DEFAULT_THRESHOLD : Number(values.threshold);
  if (values.threshold?.trim() === "" || !(threshold >= 0 && threshold <= 1)) {
    return usageError(`--threshold must be a number from 0 to 1 (got "${values.threshold}")`);
  }
  const contextSize = positiveInt("--context-size", values["context-size"]);
  const threads = positiveInt("--threads", values.threads);
  if (typeof contextSize === "string") return usageError(contextSize);
  if (typeof threads === "string") return usageError(threads);

  // Fixtures first: a typo should fail in milliseconds, before a model is loaded.
  let fixtures;
  try {
    fixtures = await loadFixtures(values.fixtures);
  } catch (error) {
    if (error instanceof FixtureError) return usageError(error.message);
    throw error;
  }
  const model = await loadModel(values.model, { backend: backend as "auto" | "mlx" | "gguf", contextSize, threads, onProgress: progressReporter() });
  try {
    process.stderr.write(`[eval] ${fixtures.cases.length} cases from ${fixtures.path} on ${model.name} (${model.selection.reason})\n`);
    const report = await runEval(model, fixtures, {
      model: values.model,
      backendReason: model.selection.reason,
      threshold,
      onCase(result, index, total) {
        const ms = result.runs.reduce((sum, r) => sum + r.latencyMs, 0) / result.runs.length;
        const why = result.passed ? "" : `: ${result.reasons.join("; ")}`;
        process.stderr.write(`[${index + 1}/${total}] ${result.passed ? "pass" : "FAIL"} ${result.name} (${ms.toFixed(0)} ms)${why}\n`);
      },
    });
    if (values.out) {
      const paths = await writeReport(report, values.out);
      process.stderr.write(`[eval] wrote ${paths.markdown} and ${paths.json}\n`);
    } else {
      process.stdout.write(`${formatMarkdown(report)}\n`);
    }
    process.stderr.write(
      `[eval] ${report.ok ? "PASS" : "FAIL"}: ${report.passed}/${report.total} passed ` +
        `(${(report.passRate * 100).toFixed(1)}%, threshold ${(threshold * 100).toFixed(1)}%), ` +
        `latency p50 ${report.latencyMs.p50.toFixed(1)} ms, p95 ${report.latencyMs.p95.toFixed(1)} ms, ` +
        `${report.tokensPerSecond.decodeMedian.toFixed(1)} tok/s\n`,
    );
    return report.ok ? EXIT.ok : EXIT.failure;
  } finally {
    await model.unload();
  }
}

function usageError(message: string): number {
  process.stderr.write(`mlx-node eval: ${message}\nRun "mlx-node help" for usage.\n`);
  return EXIT.usage;
}

/** The flag's value as a positive integer, undefined when absent, or an error message. */
function positiveInt(flag: string, value: string | undefined): number | undefined | string {
  if (value === undefined) return undefined;
  const n = Number(value);
  return value.trim() !== "" && Number.isInteger(n) && n > 0 ? n : `${flag} must be a positive integer (got "${value}")`;
}
