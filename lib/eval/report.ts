/**
 * Eval reports: markdown for people (pass rate, latency, a table of cases, every output) and JSON
 * for machines (the {@link EvalReport} as is).
 */
import { mkdir, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import type { CaseResult, EvalReport } from "./run.js";

/** Renders a report as markdown. */
export function formatMarkdown(report: EvalReport): string {
  const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
  const l = report.latencyMs;
  const runs = report.cases.reduce((n, c) => n + c.runs.length, 0);
  const lines = [
    `# Eval: ${basename(report.fixtures)} on ${basename(report.model)} (${report.backend})`,
    "",
    ...(report.description ? [report.description, ""] : []),
    `**${report.ok ? "PASS" : "FAIL"}: ${report.passed}/${report.total} cases passed (${pct(report.passRate)}), threshold ${pct(report.threshold)}**`,
    "",
    "| metric | value |",
    "|---|---|",
    `| latency p50 / p95 | ${ms(l.p50)} / ${ms(l.p95)} |`,
    `| latency min / mean / max | ${ms(l.min)} / ${ms(l.mean)} / ${ms(l.max)} |`,
    `| decode speed (median of runs) | ${report.tokensPerSecond.decodeMedian.toFixed(1)} tok/s |`,
    `| overall speed (tokens / wall time) | ${report.tokensPerSecond.overall.toFixed(1)} tok/s |`,
    `| runs | ${runs} in ${ms(report.durationMs)} |`,
    `| model | ${code(report.model)} |`,
    `| backend | ${report.backend}${report.backendReason ? ` (${cell(report.backendReason)})` : ""} |`,
    `| fixtures | ${code(report.fixtures)} |`,
    `| started | ${report.startedAt} |`,
    "",
    "| case | result | latency | tokens | tok/s | reasons |",
    "|---|---|---|---|---|---|",
    ...report.cases.map(caseRow),
    "",
    "## Outputs",
    "",
    ...report.cases.flatMap(caseSection),
  ];
  return lines.join("\n");
}

/** Renders a report as JSON (pretty-printed, with a trailing newline). */
export function formatJson(report: EvalReport): string {
  return `${JSON.stringify(report, null, 2)}\n`;
}

/** Writes `eval.md` and `eval.json` into `dir` (created if needed). @returns the two paths. */
export async function writeReport(report: EvalReport, dir: string): Promise<{ markdown: string; json: string }> {
  await mkdir(dir, { recursive: true });
  const markdown = join(dir, "eval.md");
  const json = join(dir, "eval.json");
  await writeFile(markdown, formatMarkdown(report));
  await writeFile(json, formatJson(report));
  return { markdown, json };
}

function caseRow(c: CaseResult): string {
  const latency = c.runs.reduce((sum, r) => sum + r.latencyMs, 0) / c.runs.length;
  const tokens = c.runs[0].completionTokens;
  const speed = c.runs[0].tokensPerSecond;
  const runs = c.runs.length > 1 ? ` ×${c.runs.length}` : "";
  return `| ${cell(c.name)} | ${c.passed ? "pass" : "**FAIL**"}${runs} | ${ms(latency)} | ${tokens} | ${speed.toFixed(1)} | ${cell(c.reasons.join("; "))} |`;
}

function caseSection(c: CaseResult): string[] {
  const out = [`### ${c.passed ? "pass" : "FAIL"}: ${c.name} (${c.kind}, finish: ${c.runs[0].finishReason})`, ""];
  if (c.reasons.length > 0) out.push(...c.reasons.map((r) => `- ${r}`), "");
  out.push(...fenced(c.output), "");
  // Show other runs only when they differ: identical repeats add nothing.
  c.runs.forEach((r, i) => {
    if (i > 0 && r.output !== c.output) out.push(`Run ${i + 1}:`, "", ...fenced(r.output), "");
  });
  return out;
}

/** A code block whose fence is longer than any backtick run inside, so outputs cannot break out of it. */
function fenced(text: string): string[] {
  const longest = Math.max(2, ...(text.match(/`+/g) ?? []).map((run) => run.length));
  const fence = "`".repeat(longest + 1);
  return [`${fence}text`, text, fence];
}

/** Text safe inside a markdown table cell. */
function cell(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\|/g, "\\|").replace(/\r?\n/g, " ");
}

/** A code span inside a table cell: backslashes are literal there, only pipes need escaping. */
function code(text: string): string {
  return `\`${text.replace(/\|/g, "\\|").replace(/\r?\n/g, " ")}\``;
}

function ms(value: number): string {
  return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${value.toFixed(1)} ms`;
}
