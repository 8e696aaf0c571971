/**
 * Runs loaded fixtures against a model and scores every case: patterns, JSON schema, determinism,
 * plus latency percentiles and speed. Cases run one at a time so latencies are not skewed by queueing.
 */
import type { GenerateOptions, GenerateResult } from "../backend.js";
import type { ChatMessage, ChatOptions } from "../chat.js";
import { patternLabel, type LoadedFixtures, type ResolvedCase } from "./fixtures.js";
import { parseAndValidate } from "../json-schema/validate.js";

/** What the runner needs from a model; a `LoadedModel` fits, and so does a test double. */
export interface EvalModel {
  readonly name: string;
  generate(prompt: string, options?: GenerateOptions): Promise<GenerateResult>;
  chat(messages: ChatMessage[], options?: ChatOptions): Promise<GenerateResult>;
}

/** One run of one case. */
export interface RunResult {
  output: string;
  passed: boolean;
  reasons: string[];
  /** Wall-clock milliseconds around the call. */
  latencyMs: number;
  timeToFirstTokenMs: number;
  completionTokens: number;
  promptTokens: number;
  /** Generated tokens per second after the first token, as the backend measured it. */
  tokensPerSecond: number;
  finishReason: GenerateResult["finishReason"] | "error";
}

/** The outcome of one case over all its runs. */
export interface CaseResult {
  name: string;
  kind: "prompt" | "messages";
  /** True when every run passed (and, for deterministic cases, all outputs are equal). */
  passed: boolean;
  /** Why it failed; empty when it passed. Prefixed with the run number when a case runs more than once. */
  reasons: string[];
  /** The first run's output. */
  output: string;
  runs: RunResult[];
}

/** Summary statistics over a set of numbers. */
export interface Percentiles {
  p50: number;
  p95: number;
  min: number;
  max: number;
  mean: number;
}

/** The result of a whole eval. */
export interface EvalReport {
  fixtures: string;
  description?: string;
  model: string;
  backend: string;
  /** Why this backend was chosen (from `loadModel`), when known. */
  backendReason?: string;
  startedAt: string;
  durationMs: number;
  /** Pass rate the run must reach to count as passing, in [0, 1]. */
  threshold: number;
  total: number;
  passed: number;
  /** Passed cases / total cases, in [0, 1]. */
  passRate: number;
  /** `passRate >= threshold`. */
  ok: boolean;
  /** Per-run wall-clock latency over every run of every case. */
  latencyMs: Percentiles;
  tokensPerSecond: {
    /** Median of the per-run decode speeds. */
    decodeMedian: number;
    /** All generated tokens / all wall-clock time. */
    overall: number;
  };
  cases: CaseResult[];
}

/** Options for {@link runEval}. */
export interface RunEvalOptions {
  /** Model path or label for the report. */
  model: string;
  /** Backend reason for the report. */
  backendReason?: string;
  /** Minimum pass rate in [0, 1]. Defaults to 1: every case must pass. */
  threshold?: number;
  /** Called after each case, for progress output. */
  onCase?: (result: CaseResult, index: number, total: number) => void;
}

/** Runs every case of `fixtures` on `model`, in order, and scores them. Model errors fail the case, not the run. */
export async function runEval(model: EvalModel, fixtures: LoadedFixtures, options: RunEvalOptions): Promise<EvalReport> {
  const threshold = options.threshold ?? 1;
  if (!(threshold >= 0 && threshold <= 1)) throw new RangeError(`threshold must be in [0, 1], got ${threshold}`);
  const startedAt = new Date();
  const start = performance.now();
  const cases: CaseResult[] = [];
  for (const [index, c] of fixtures.cases.entries()) {
    const result = await runCase(model, c);
    cases.push(result);
    options.onCase?.(result, index, fixtures.cases.length);
  }
  // Runs that threw measure how fast an error comes back, not generation: keep them out of the speed figures.
  const runs = cases.flatMap((c) => c.runs).filter((r) => r.finishReason !== "error");
  const passed = cases.filter((c) => c.passed).length;
  const totalTokens = runs.reduce((sum, r) => sum + r.completionTokens, 0);
  const totalMs = runs.reduce((sum, r) => sum + r.latencyMs, 0);
  return {
    fixtures: fixtures.path,
    ...(fixtures.description !== undefined ? { description: fixtures.description } : {}),
    model: options.model,
    backend: model.name,
    ...(options.backendReason !== undefined ? { backendReason: options.backendReason } : {}),
    startedAt: startedAt.toISOString(),
    durationMs: performance.now() - start,
    threshold,
    total: cases.length,
    passed,
    passRate: passed / cases.length,
    ok: passed / cases.length >= threshold,
    latencyMs: percentiles(runs.map((r) => r.latencyMs)),
    tokensPerSecond: {
      decodeMedian: percentiles(runs.filter((r) => r.tokensPerSecond > 0).map((r) => r.tokensPerSecond)).p50,
      overall: totalMs > 0 ? (totalTokens / totalMs) * 1000 : 0,
    },
    cases,
  };
}

/** Runs one case `runs` times and combines the verdicts. */
async function runCase(model: EvalModel, c: ResolvedCase): Promise<CaseResult> {
  const runs: RunResult[] = [];
  for (let i = 0; i < c.runs; i++) runs.push(await runOnce(model, c));
  const label = (i: number) => (c.runs > 1 ? `run ${i + 1}: ` : "");
  const reasons = runs.flatMap((r, i) => r.reasons.map((reason) => label(i) + reason));
  if (c.deterministic) {
    const differing = runs.findIndex((r) => r.output !== runs[0].output);
    if (differing > 0) reasons.push(`not deterministic: run ${differing + 1} output differs from run 1`);
  }
  return { name: c.name, kind: c.kind, passed: reasons.length === 0, reasons, output: runs[0].output, runs };
}

async function runOnce(model: EvalModel, c: ResolvedCase): Promise<RunResult> {
  const start = performance.now();
  let result: GenerateResult;
  try {
    result = c.kind === "prompt" ? await model.generate(c.prompt!, c.options) : await model.chat(c.messages!, c.options);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    return {
      output: "", passed: false, reasons: [`error: ${message}`], latencyMs: performance.now() - start,
      timeToFirstTokenMs: 0, completionTokens: 0, promptTokens: 0, tokensPerSecond: 0, finishReason: "error",
    };
  }
  const latencyMs = performance.now() - start;
  const reasons = score(result.text, c);
  return {
    output: result.text,
    passed: reasons.length === 0,
    reasons,
    latencyMs,
    timeToFirstTokenMs: result.timings.timeToFirstTokenMs,
    completionTokens: result.usage.completionTokens,
    promptTokens: result.usage.promptTokens,
    tokensPerSecond: result.timings.generatedTokensPerSecond,
    finishReason: result.finishReason,
  };
}

/**
 * Checks one output against a case's expectations.
 * @returns the reasons it fails; empty when it passes.
 */
export function score(output: string, c: Pick<ResolvedCase, "expect" | "forbid" | "jsonSchema">): string[] {
  const reasons: string[] = [];
  for (const p of c.expect) if (!p.regex.test(output)) reasons.push(`expected ${patternLabel(p)} did not match`);
  for (const p of c.forbid) {
    const match = p.regex.exec(output);
    if (match) reasons.push(`forbidden ${patternLabel(p)} matched ${JSON.stringify(excerpt(match[0]))} at ${match.index}`);
  }
  if (c.jsonSchema) {
    const check = parseAndValidate(output.trim(), c.jsonSchema);
    if (!check.ok) for (const issue of check.issues) reasons.push(`JSON ${issue.path || "/"}: ${issue.message}`);
  }
  return reasons;
}

/**
 * Nearest-rank percentiles (the p-th percentile is the smallest value with at least p% of values at or
 * below it), so every reported latency is one that was actually measured. All zeros for no values.
 */
export function percentiles(values: readonly number[]): Percentiles {
  if (values.length === 0) return { p50: 0, p95: 0, min: 0, max: 0, mean: 0 };
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p: number) => sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)];
  return {
    p50: rank(50),
    p95: rank(95),
    min: sorted[0],
    max: sorted[sorted.length - 1],
    mean: sorted.reduce((a, b) => a + b, 0) / sorted.length,
  };
}

function excerpt(text: string): string {
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
