/**
 * `npm run fuzz -- [--count N] [--seed S] [--format gguf|mlx|both] [--parallel P] [--only I,J] [--timeout MS] [--verbose]`:
 * the hostile-model fuzz run of tests/fuzz.test.ts, longer. Exits 1 on any crash or hang.
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { formatReport, runFuzz, type FuzzCase } from "./run.js";

const MODELS = process.env.MLX_NODE_MODELS ?? join(process.cwd(), "..", "shared", "models");
export const FUZZ_SOURCES = {
  gguf: join(MODELS, "stories260K", "stories260K.gguf"),
  mlx: join(MODELS, "stories260K", "mlx-4bit"),
};

const { values } = parseArgs({
  options: {
    count: { type: "string", default: "300" },
    seed: { type: "string", default: "1" },
    format: { type: "string", default: "both" },
    parallel: { type: "string", default: "2" },
    only: { type: "string" },
    source: { type: "string" },
    verbose: { type: "boolean", default: false },
    timeout: { type: "string", default: "90000" },
  },
});
const formats = values.format === "both" ? (["gguf", "mlx"] as const) : [values.format as "gguf" | "mlx"];
let failed = false;
for (const format of formats) {
  const report = await runFuzz({
    format,
    source: values.source ?? FUZZ_SOURCES[format],
    count: Number(values.count),
    seed: Number(values.seed),
    parallel: Number(values.parallel),
    timeoutMs: Number(values.timeout),
    ...(values.only ? { only: values.only.split(",").map(Number) } : {}),
    ...(values.verbose
      ? {
          onCase: (c: FuzzCase) => {
            const r = c.result;
            const mem = r?.peakGrowth !== undefined ? ` +${(r.peakGrowth / 2 ** 20).toFixed(1)} MiB` : "";
            console.log(`#${c.mutation.index} ${c.mutation.description}: ${r ? `${r.outcome} ${(r.ms).toFixed(0)} ms${mem} stall ${r.maxStallMs.toFixed(0)} ms ${r.error ?? ""} ${r.message ?? ""}` : c.exit}`);
          },
        }
      : {}),
  });
  console.log(formatReport(report));
  if (report.crashes.length > 0 || report.hangs.length > 0) failed = true;
}
process.exit(failed ? 1 : 0);
