/**
 * `npm run bench:quality`: the shell-command fixtures answered as JSON (fixtures/shell-commands-json.json)
 * on the real models (tests/python/setup_models.py) through both backends, with and without the
 * `jsonSchema` generation option. Reports per run the pass rate (patterns, safety and schema), the
 * rate of outputs that parse as JSON and the rate that also validate against the schema.
 *
 *   node dist/bench/shell-quality.js [--models a,b] [--backends mlx,gguf] [--modes free,schema] [--fixtures FILE] [--out DIR]
 *
 * MLX runs the 4-bit directory, GGUF the .gguf file; a model without a chat template of its own gets
 * its HF directory's (tests/support/real-model-chat.ts). Writes <out>/shell-quality-<date>.{json,md} (default bench/results).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { loadModel } from "../lib/backends/select.js";
import { loadFixtures, type LoadedFixtures } from "../lib/eval/fixtures.js";
import { parseAndValidate } from "../lib/json-schema/validate.js";
import { runEval } from "../lib/eval/run.js";
import { templateIfMissing } from "../tests/support/real-model-chat.js";
import { realModels, type RealModel } from "../tests/support/real-models.js";

const ROOT = resolve(fileURLToPath(new URL(".", import.meta.url)), "..", "..");
const DEFAULT_FIXTURES = join(ROOT, "fixtures", "shell-commands-json.json");

type Mode = "free" | "schema";

/** One model × backend × mode. */
export interface QualityRow {
  model: string;
  backend: "mlx" | "gguf";
  mode: Mode;
  cases: number;
  passed: number;
  /** Outputs that parse as JSON (trimmed). */
  parsed: number;
  /** Outputs that parse and validate against the case's schema. */
  valid: number;
  durationMs: number;
  failures: { name: string; reasons: string[]; output: string }[];
}

/** The fixtures for one mode: `schema` constrains generation with each case's own schema. */
function forMode(fixtures: LoadedFixtures, mode: Mode, chatTemplate: string | undefined): LoadedFixtures {
  return {
    ...fixtures,
    cases: fixtures.cases.map((c) => ({
      ...c,
      options: { ...c.options, ...(chatTemplate ? { chatTemplate } : {}), ...(mode === "schema" ? { jsonSchema: c.jsonSchema } : {}) },
    })),
  };
}

async function measure(real: RealModel, backend: "mlx" | "gguf", modes: Mode[], fixtures: LoadedFixtures): Promise<QualityRow[]> {
  const model = await loadModel(backend === "mlx" ? real.mlx4bit : real.gguf, { backend });
  const rows: QualityRow[] = [];
  try {
    const template = await templateIfMissing(model, real.hf);
    if (template) process.stderr.write(`[quality] ${real.name} ${backend}: no chat template of its own; using ${real.hf}'s\n`);
    for (const mode of modes) {
      const report = await runEval(model, forMode(fixtures, mode, template), {
        model: real.name,
        threshold: 0,
        onCase: (r, i, n) => process.stderr.write(`[quality] ${real.name} ${backend} ${mode} [${i + 1}/${n}] ${r.passed ? "pass" : "FAIL"} ${r.name}\n`),
      });
      const outputs = report.cases.map((c, i) => ({ c, schema: fixtures.cases[i].jsonSchema! }));
      rows.push({
        model: real.name,
        backend,
        mode,
        cases: report.total,
        passed: report.passed,
        parsed: outputs.filter(({ c }) => parses(c.output)).length,
        valid: outputs.filter(({ c, schema }) => parseAndValidate(c.output.trim(), schema).ok).length,
        durationMs: report.durationMs,
        failures: report.cases.filter((c) => !c.passed).map((c) => ({ name: c.name, reasons: c.reasons, output: c.output })),
      });
    }
  } finally {
    await model.unload();
  }
  return rows;
}

function parses(text: string): boolean {
  try {
    JSON.parse(text.trim());
    return true;
  } catch {
    return false;
  }
}

const pct = (n: number, d: number): string => `${((100 * n) / d).toFixed(0)}% (${n}/${d})`;

/** The table of rows as markdown. */
export function toMarkdown(rows: QualityRow[]): string {
  const lines = [
    "| model | backend | jsonSchema | pass rate | JSON parses | JSON valid | time |",
    "|---|---|---|---|---|---|---|",
    ...rows.map((r) => `| ${r.model} | ${r.backend} | ${r.mode === "schema" ? "yes" : "no"} | ${pct(r.passed, r.cases)} | ${pct(r.parsed, r.cases)} | ${pct(r.valid, r.cases)} | ${(r.durationMs / 1000).toFixed(1)} s |`),
  ];
  const free = rows.filter((r) => r.mode === "free");
  const schema = rows.filter((r) => r.mode === "schema");
  const sum = (list: QualityRow[], key: "parsed" | "valid" | "cases") => list.reduce((s, r) => s + r[key], 0);
  if (free.length) lines.push("", `Without jsonSchema: ${pct(sum(free, "parsed"), sum(free, "cases"))} of outputs parse as JSON.`);
  if (schema.length) lines.push(`With jsonSchema: ${pct(sum(schema, "valid"), sum(schema, "cases"))} parse and validate.`);
  return lines.join("\n");
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { models: { type: "string" }, backends: { type: "string" }, modes: { type: "string" }, out: { type: "string" }, fixtures: { type: "string" } },
  });
  const real = realModels();
  if (!real.available) throw new Error(`real models unavailable: ${real.reason}`);
  const names = values.models?.split(",");
  const backends = (values.backends?.split(",") ?? ["mlx", "gguf"]) as ("mlx" | "gguf")[];
  const modes = (values.modes?.split(",") ?? ["free", "schema"]) as Mode[];
  const fixturesPath = resolve(values.fixtures ?? DEFAULT_FIXTURES);
  const fixtures = await loadFixtures(fixturesPath);
  const out = resolve(values.out ?? join(ROOT, "bench", "results"));
  mkdirSync(out, { recursive: true });
  const stem = join(out, `shell-quality-${new Date().toISOString().slice(0, 10)}`);
  const rows: QualityRow[] = [];
  // Written after every model and backend, so a long run that is stopped keeps what it measured.
  const write = (): void => {
    writeFileSync(`${stem}.json`, JSON.stringify({ fixtures: fixturesPath, rows }, null, 2));
    writeFileSync(`${stem}.md`, `# Shell commands as JSON, real models\n\n${toMarkdown(rows)}\n`);
  };
  for (const m of real.models.filter((m) => !names || names.some((n) => m.name.includes(n)))) {
    for (const backend of backends) {
      rows.push(...(await measure(m, backend, modes, fixtures)));
      write();
    }
  }
  process.stdout.write(`${toMarkdown(rows)}\n`);
  process.stderr.write(`[quality] wrote ${stem}.json and ${stem}.md\n`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((error) => {
    process.stderr.write(`${(error as Error).stack ?? error}\n`);
    process.exit(1);
  });
}
