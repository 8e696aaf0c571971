/**
 * `npm run bench` (node dist/bench/run.js): every available backend on every model, with the
 * ratios the project tracks, written to bench/results/<date>.{json,md,svg}.
 *
 *   node dist/bench/run.js [--quick] [--models a,b] [--repeats N] [--out DIR] [--budget SECONDS] [--make-models]
 *
 * After the timed groups (outside the budget): bench/gguf.ts (GgufBackend ÷ raw node-llama-cpp in CPU
 * time per token, on the smallest synthetic GGUF shape; not with --quick), bench/mlx-lm.ts (mlx-node ÷ mlx-lm; `--models mlx-lm`
 * runs it alone), then, not with --quick or --models, bench/json-schema.ts, bench/chat.ts and bench/batching.ts.
 *
 * Models: the real ones in shared/models (stories260K as hf-f32, hf-bf16, mlx-4bit on MLX and
 * stories260K.gguf on GGUF) and every synthetic model in bench/.models/ (bench/synthetic/), in
 * groups of one shape. `--models` keeps entries whose id contains one of the comma-separated names.
 *
 * How a group runs: each model gets its own worker process (bench/measure.ts), started one at a
 * time (first load timed), then probed with tiny requests to learn its speed. A planner fits the
 * protocol (512-token prompt, 128 decoded tokens, `--repeats` samples, a reload per sample) into
 * the group's share of the time budget, cutting the slowest entries first (no reloads, then fewer
 * tokens, then fewer repeats, then skipping them, always
 * with the reason in the report). Repeats are interleaved: in each round every model runs one
 * sample, in a rotating order, so noise of the shared machine hits all of them.
 */
import { execFileSync, fork, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { arch, availableParallelism, cpus, platform, release, totalmem } from "node:os";
import { basename, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { packageRoot } from "../lib/native.js";
import { measureBandwidth, mergeBandwidth } from "./bandwidth.js";
import {
  fitCounts, runWorker, type SampleProgress, type SampleResult, type WorkerCommand, type WorkerMessage, type WorkerReady, type WorkerSpec,
} from "./measure.js";
import { mlxUnavailableReason } from "./mlx.js";
import { pairRatios, summarizeEntry, toMarkdown, toSvg, writeResults, type BenchRun, type EntryResult, type ProbeRecord } from "./report.js";

const SCRIPT = fileURLToPath(import.meta.url);
const LEVELS: readonly [number, number][] = [[512, 128], [256, 64], [128, 32], [64, 16], [32, 8]];
const PROBES: readonly [number, number][] = [[4, 4], [32, 16], [128, 32]];
/** The real models of shared/models: path, backend, weights. */
const REAL: readonly [string, "mlx" | "gguf", string][] = [
  ["stories260K/hf-f32", "mlx", "f32"], ["stories260K/hf-bf16", "mlx", "bf16"], ["stories260K/mlx-4bit", "mlx", "4bit"],
  ["stories260K/stories260K.gguf", "gguf", "f32"],
];

type Command = WorkerCommand extends infer C ? (C extends unknown ? Omit<C, "id"> : never) : never;
const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e));
const secs = (ms: number) => `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;

/** One worker process holding one model. */
class WorkerHandle {
  private readonly child: ChildProcess;
  private readonly ready: Promise<WorkerReady>;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void; progress?(p: SampleProgress): void }>();
  private nextId = 1;
  private exited = false;

  constructor(spec: WorkerSpec) {
    this.child = fork(SCRIPT, ["--worker", JSON.stringify(spec)], { stdio: ["ignore", "inherit", "inherit", "ipc"], serialization: "advanced" });
    this.ready = new Promise((resolveReady, rejectReady) => {
      this.child.on("message", (m: WorkerMessage) => {
        if (m.type === "ready") resolveReady(m);
        else if (m.type === "fatal") rejectReady(new Error(m.error));
        else if (m.type === "progress") this.pending.get(m.id)?.progress?.(m.progress);
        else {
          const p = this.pending.get(m.id);
          this.pending.delete(m.id);
          if (m.ok) p?.resolve(m.result);
          else p?.reject(new Error(m.error));
        }
      });
      this.child.on("exit", (code, signal) => {
        this.exited = true;
        const error = new Error(`the worker exited (${signal ?? `code ${code}`})`);
        rejectReady(error);
        for (const p of this.pending.values()) p.reject(error);
        this.pending.clear();
      });
    });
    this.ready.catch(() => undefined);
  }

  whenReady(timeoutMs: number): Promise<WorkerReady> {
    return new Promise((res, rej) => {
      const timer = setTimeout(() => (this.kill(), rej(new Error(`not loaded after ${secs(timeoutMs)}`))), timeoutMs);
      this.ready.then((r) => (clearTimeout(timer), res(r)), (e: Error) => (clearTimeout(timer), rej(e)));
    });
  }

  request<T>(command: Command, timeoutMs: number, progress?: (p: SampleProgress) => void): Promise<T> {
    if (this.exited) return Promise.reject(new Error("the worker has exited"));
    const id = this.nextId++;
    return new Promise<T>((res, rej) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        this.kill();
        rej(new Error(`no answer within ${secs(timeoutMs)} (worker stopped)`));
      }, timeoutMs);
      this.pending.set(id, { resolve: (v) => (clearTimeout(timer), res(v as T)), reject: (e) => (clearTimeout(timer), rej(e)), ...(progress ? { progress } : {}) });
      this.child.send({ ...command, id });
    });
  }

  kill(): void {
    if (!this.exited) this.child.kill("SIGKILL");
  }

  async close(): Promise<{ vmHwmBytes?: number } | undefined> {
    if (this.exited) return undefined;
    try {
      return await this.request<{ vmHwmBytes?: number }>({ cmd: "exit" }, 30_000);
    } catch {
      this.kill();
      return undefined;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Planning

interface Estimate { pre: number; dec: number; overhead: number; reloadMs: number; context: number }
interface Live { entry: EntryResult; worker: WorkerHandle; est: Estimate; p: { level: number; repeats: number; reload: boolean; skip: boolean } }

const counts = (level: number, context: number) => fitCounts(LEVELS[level][0], LEVELS[level][1], context);
function sampleMs(l: Live): number {
  const c = counts(l.p.level, l.est.context);
  return c.prefillTokens * l.est.pre + c.decodeTokens * l.est.dec + l.est.overhead + (l.p.reload ? l.est.reloadMs : 0);
}
const itemMs = (l: Live) => (l.p.skip ? 0 : l.p.repeats * sampleMs(l));

/**
 * Cuts the most expensive plan one step at a time until the group fits `budgetMs`: first its
 * reloads, then down a ladder of (tokens, repeats) that keeps ≥ 3 repeats as long as it can, then
 * the entry itself.
 */
function plan(live: Live[], budgetMs: number, repeats: number): void {
  const ladder: [number, number][] = [];
  for (const step of [[0, repeats], [1, repeats], [2, repeats], [2, 3], [3, 3], [3, 2], [4, 2], [4, 1]] as [number, number][]) {
    const s: [number, number] = [step[0], Math.min(step[1], repeats)];
    if (!ladder.some((x) => x[0] === s[0] && x[1] === s[1])) ladder.push(s);
  }
  const degrade = (p: Live["p"]): void => {
    const at = ladder.findIndex((x) => x[0] === p.level && x[1] === p.repeats);
    if (p.reload) p.reload = false;
    else if (at >= 0 && at < ladder.length - 1) [p.level, p.repeats] = ladder[at + 1];
    else p.skip = true;
  };
  const plans = [...new Set(live.map((l) => l.p))];
  const cost = (p: Live["p"]) => live.filter((l) => l.p === p).reduce((n, l) => n + itemMs(l), 0);
  for (;;) {
    const total = plans.reduce((n, p) => n + cost(p), 0);
    const worst = plans.filter((p) => !p.skip).sort((a, b) => cost(b) - cost(a))[0];
    if (total <= budgetMs || !worst) break;
    degrade(worst);
  }
  for (const l of live) {
    const c = counts(l.p.level, l.est.context);
    l.entry.plan = { ...c, repeats: l.p.repeats, reload: l.p.reload, reduced: l.p.level > 0 || l.p.repeats < repeats };
    if (l.p.skip) {
      skip(l.entry, `over the time budget: even ${c.prefillTokens}/${c.decodeTokens} tokens once needs ~${secs(sampleMs(l))} ` +
        `of the ${secs(budgetMs)} left for the group; ${speedNote(l.est)}`);
    }
  }
}

function speedNote(est: { pre: number; dec: number }): string {
  return `probe: prefill ≈ ${(1000 / est.pre).toPrecision(3)} tok/s, decode ≈ ${(1000 / est.dec).toPrecision(3)} tok/s`;
}

function skip(entry: EntryResult, reason: string): void {
  entry.status = "skipped";
  entry.reason = reason;
  console.log(`  skip ${entry.id}: ${reason}`);
}

/** Tiny requests of growing size (the first with a timed reload) until one takes over 1.5 s. */
async function probe(entry: EntryResult, worker: WorkerHandle, capMs: number): Promise<Estimate | undefined> {
  let est: Estimate | undefined;
  for (const [i, [pre, dec]] of PROBES.entries()) {
    const req = { prefillTokens: pre, decodeTokens: dec, reload: i === 0, variant: 100 + i, progress: true };
    const record: ProbeRecord = { req, ms: 0 };
    entry.probes.push(record);
    const progress = new Map<string, SampleProgress>();
    const start = performance.now();
    try {
      const r = await worker.request<SampleResult>({ cmd: "sample", req }, i === 0 ? capMs + 2 * (entry.coldLoadMs ?? 0) : Math.max(capMs, 30_000), (p) => progress.set(p.phase, p));
      record.ms = performance.now() - start;
      record.result = r;
      const inner = r.ttftMs + r.callerMsPerToken * Math.max(0, r.generatedTokens - 1) + (r.loadMs ?? 0);
      est = {
        pre: r.ttftMs / Math.max(1, r.evaluatedPromptTokens), dec: r.callerMsPerToken, overhead: Math.max(30, record.ms - inner),
        reloadMs: est?.reloadMs ?? r.loadMs ?? entry.coldLoadMs ?? 0, context: entry.contextSize ?? 2048,
      };
      if (record.ms > 1500) break;
    } catch (error) {
      record.ms = performance.now() - start;
      record.error = errorText(error);
      record.progress = [...progress.values()];
      if (est) break; // a larger probe failed: plan with the smaller one
      const seen = record.progress.map((p) => `${p.phase} ${p.tokens} tokens in ${secs(p.ms)}`).join(", ");
      skip(entry, `too slow for the time budget: the probe (${pre}-token prompt + ${dec} tokens) did not finish in ${secs(record.ms)}` +
        `${seen ? ` (${seen})` : ""}: ${record.error}`);
      return undefined;
    }
  }
  return est;
}

// ---------------------------------------------------------------------------------------------
// A group of models with one shape

async function runGroup(entries: EntryResult[], budgetMs: number, repeats: number): Promise<void> {
  const start = performance.now();
  const over = () => performance.now() > start + budgetMs * 1.25;
  console.log(`\n== ${entries[0].group}: ${entries.length} models, ${secs(budgetMs)} budget`);
  const live: Live[] = [];
  for (const entry of entries) {
    if (entry.status !== "ok") continue;
    if (!existsSync(entry.path)) {
      skip(entry, "gone: the file was removed during the run");
      continue;
    }
    if (performance.now() > start + budgetMs * 0.6) {
      skip(entry, "over the time budget before it could start");
      continue;
    }
    // Raw node-llama-cpp runs with the threads GgufBackend chose for the same file.
    const twin = live.find((l) => l.entry.backend === "gguf" && l.entry.path === entry.path);
    const worker = new WorkerHandle({ kind: entry.backend, path: entry.path, ...(entry.backend === "raw" ? { threads: twin?.entry.threads ?? 1 } : {}) });
    try {
      const ready = await worker.whenReady(180_000);
      Object.assign(entry, {
        coldLoadMs: ready.loadMs, contextSize: ready.contextSize, threads: ready.threads, weightBytes: ready.weightBytes, info: ready.info,
        rssAfterLoadBytes: ready.rssAfterLoadBytes, mlxActiveAfterLoadBytes: ready.mlxActiveAfterLoadBytes,
      });
      if (ready.runtime) runtime ??= ready.runtime;
    } catch (error) {
      entry.status = "failed";
      entry.reason = `load failed: ${errorText(error)}`;
      console.log(`  ${entry.id}: ${entry.reason}`);
      worker.kill();
      continue;
    }
    const est = await probe(entry, worker, Math.min(10_000, Math.max(4_000, budgetMs * 0.05)));
    if (!est) {
      worker.kill();
      continue;
    }
    console.log(`  ${entry.id}: first load ${secs(entry.coldLoadMs ?? 0)}, ${speedNote(est)}`);
    // A GGUF file and its raw baseline share one plan, so they always run the same protocol.
    const p = twin && entry.backend === "raw" ? twin.p : { level: 0, repeats, reload: true, skip: false };
    live.push({ entry, worker, est, p });
  }
  plan(live, start + budgetMs - performance.now() - 500 * live.length, repeats);
  for (const l of live.filter((x) => x.p.skip)) await l.worker.close();
  const active = live.filter((l) => !l.p.skip);
  for (const l of active) {
    const p = l.entry.plan!;
    console.log(`  plan ${l.entry.id}: ${p.prefillTokens}/${p.decodeTokens} tokens × ${p.repeats}${p.reload ? " with reloads" : ""}` +
      `${p.reduced ? " (cut to fit the budget)" : ""}, ~${secs(itemMs(l))}`);
  }

  for (let r = 0; r < repeats; r++) {
    const round = active.filter((l) => l.entry.status === "ok" && l.p.repeats > r && !l.entry.reason);
    if (!round.length) break;
    if (over()) {
      for (const l of round) l.entry.reason = `stopped after ${l.entry.samples.length} samples: the group ran over its time budget`;
      break;
    }
    for (const [i] of round.entries()) {
      const l = round[(i + r) % round.length];
      const p = l.entry.plan!;
      try {
        const s = await l.worker.request<SampleResult>(
          { cmd: "sample", req: { prefillTokens: p.prefillTokens, decodeTokens: p.decodeTokens, reload: p.reload, variant: r } },
          4 * sampleMs(l) + 20_000,
        );
        l.entry.samples.push(s);
        console.log(`  [${r + 1}/${repeats}] ${l.entry.id}: TTFT ${s.ttftMs.toFixed(0)} ms, prefill ${s.prefillTps.toFixed(1)} tok/s, decode ${s.decodeTps.toFixed(1)} tok/s` +
          `${s.mlx?.derived ? `, outside eval ${(s.mlx.derived.outsideShare * 100).toFixed(1)}%` : ""}`);
      } catch (error) {
        l.entry.reason = `sample ${r + 1} failed: ${errorText(error)}`;
        if (!l.entry.samples.length) l.entry.status = "failed";
        console.log(`  ${l.entry.id}: ${l.entry.reason}`);
      }
    }
  }

  for (const l of active) {
    const hwm = await l.worker.request<{ vmHwmBytes?: number }>({ cmd: "memory" }, 10_000).catch(() => undefined);
    l.entry.vmHwmBytes = hwm?.vmHwmBytes;
  }
  for (const l of active) await l.worker.close();
  console.log(`  group done in ${secs(performance.now() - start)}`);
}

// ---------------------------------------------------------------------------------------------
// Models and the run

function discover(root: string, realRoot: string, synthDir: string): EntryResult[] {
  const make = (id: string, group: string, real: boolean, backend: EntryResult["backend"], variant: string, path: string): EntryResult =>
    ({ id, group, real, backend, variant, path, status: "ok", probes: [], samples: [] });
  const out: EntryResult[] = [];
  for (const [rel, backend, variant] of REAL) {
    const path = join(realRoot, rel);
    if (!existsSync(path)) continue;
    out.push(make(rel, rel.split("/")[0], true, backend, variant, path));
    if (backend === "gguf") out.push(make(`${rel} raw`, rel.split("/")[0], true, "raw", variant, path));
  }
  const names = existsSync(synthDir) ? readdirSync(synthDir).sort() : [];
  const synth: EntryResult[] = [];
  for (const name of names) {
    const path = join(synthDir, name);
    if (name.endsWith(".gguf")) {
      const m = name.slice(0, -5).match(/^(.*)-([^-]+)$/);
      if (m) synth.push(make(name, m[1], false, "gguf", m[2], path), make(`${name} raw`, m[1], false, "raw", m[2], path));
    } else if (existsSync(join(path, "config.json"))) {
      const m = name.match(/^(.*)-mlx-(.+)$/);
      synth.push(make(name, m ? m[1] : name, false, "mlx", m ? m[2] : "mlx", path));
    }
  }
  // A model written right now (bench/synthetic running) is not benchmarked half-written.
  const newest = (p: string): number => (statSync(p).isDirectory() ? Math.max(0, ...readdirSync(p).map((f) => newest(join(p, f)))) : statSync(p).mtimeMs);
  for (const e of synth) {
    if (Date.now() - newest(e.path) < 30_000) Object.assign(e, { status: "skipped", reason: "its files changed in the last 30 s (still being written?)" });
  }
  const size = (e: EntryResult) => (statSync(e.path).isDirectory() ? readdirSync(e.path).reduce((n, f) => n + statSync(join(e.path, f)).size, 0) : statSync(e.path).size);
  // Smallest groups first, and the smallest models first within a group (the budget cuts the big ones).
  const sizes = new Map(synth.map((e) => [e, size(e)]));
  const groupSize = new Map<string, number>();
  for (const e of synth) groupSize.set(e.group, (groupSize.get(e.group) ?? 0) + sizes.get(e)!);
  synth.sort((a, b) => groupSize.get(a.group)! - groupSize.get(b.group)! || a.group.localeCompare(b.group) || sizes.get(a)! - sizes.get(b)! || a.id.localeCompare(b.id));
  return [...out, ...synth];
}

let runtime: unknown;

function machine(root: string): Record<string, unknown> {
  const git = (args: string[]) => execFileSync("git", args, { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  let commit: string | undefined;
  try {
    commit = `${git(["rev-parse", "--short", "HEAD"])}${git(["status", "--porcelain"]) ? "+dirty" : ""}`;
  } catch {
    commit = undefined;
  }
  let nodeLlamaCpp: string | undefined;
  try {
    nodeLlamaCpp = (JSON.parse(readFileSync(join(root, "node_modules/node-llama-cpp/package.json"), "utf8")) as { version: string }).version;
  } catch {
    nodeLlamaCpp = undefined;
  }
  const rt = runtime as { device?: string; mlxVersion?: string } | undefined;
  return {
    cpu: cpus()[0]?.model ?? "unknown CPU", cores: availableParallelism(), memoryGiB: totalmem() / 2 ** 30, platform: `${platform()}-${arch()} ${release()}`,
    node: process.version, mlx: rt ? `${rt.mlxVersion} (${rt.device})` : undefined, nodeLlamaCpp, commit,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: "boolean" }, models: { type: "string" }, repeats: { type: "string" }, out: { type: "string" },
      budget: { type: "string" }, "make-models": { type: "boolean" }, help: { type: "boolean" },
    },
  });
  if (values.help) {
    console.log("usage: node dist/bench/run.js [--quick] [--models a,b] [--repeats N] [--out DIR] [--budget SECONDS] [--make-models]");
    return;
  }
  const quick = values.quick ?? false;
  const repeats = Math.max(1, Math.floor(Number(values.repeats ?? (quick ? 2 : 5)))) || 1;
  const budgetS = Number(values.budget ?? (quick ? 100 : 540));
  const root = packageRoot();
  const realRoot = process.env.MLX_NODE_SHARED_MODELS ?? resolve(root, "../shared/models");
  const synthDir = join(root, "bench/.models");
  const started = new Date();
  const deadline = performance.now() + budgetS * 1000;
  const notes: string[] = [];

  if (values["make-models"]) await makeSyntheticModels(synthDir);
  const filters = values.models?.split(",").map((s) => s.trim().toLowerCase()).filter(Boolean);
  let entries = discover(root, realRoot, synthDir).filter((e) => !filters || filters.some((f) => e.id.toLowerCase().includes(f) || e.group.toLowerCase().includes(f)));
  const firstSynthetic = entries.find((e) => !e.real)?.group;
  if (quick && !filters && firstSynthetic) {
    const left = [...new Set(entries.filter((e) => !e.real && e.group !== firstSynthetic).map((e) => e.group))];
    if (left.length) notes.push(`--quick runs the real models and the smallest synthetic group only; not run: ${left.join(", ")} (select them with --models).`);
    entries = entries.filter((e) => e.real || e.group === firstSynthetic);
  }
  if (!existsSync(synthDir) || readdirSync(synthDir).length === 0) notes.push(`No synthetic models in ${synthDir}: create them with --make-models (bench/synthetic).`);
  const mlxReason = mlxUnavailableReason();
  for (const e of entries) if (e.backend === "mlx" && mlxReason) skip(e, `MLX unavailable: ${mlxReason}`);
  if (mlxReason) notes.push(`MLX skipped: ${mlxReason}`);
  console.log(`mlx-node bench${quick ? " --quick" : ""}: ${entries.length} models, ${repeats} repeats, budget ${budgetS} s`);

  const bandwidth = [await measureBandwidth({ bytes: quick ? 2 ** 29 : 2 ** 30, rounds: quick ? 3 : 5 })];
  console.log(`memory read bandwidth: ${bandwidth[0].bestReadGBs.toFixed(1)} GB/s (1 thread ${bandwidth[0].readGBs.toFixed(1)}, copy ${bandwidth[0].copyGBs.toFixed(1)})`);

  const groups = [...new Set(entries.map((e) => e.group))];
  const reserveMs = quick ? 3_000 : 12_000;
  for (const [i, group] of groups.entries()) {
    const share = (deadline - reserveMs - performance.now()) / (groups.length - i);
    const members = entries.filter((e) => e.group === group);
    if (share < 5_000) {
      for (const e of members) if (e.status === "ok") skip(e, "the run's time budget was used up by earlier models");
      continue;
    }
    await runGroup(members, share, repeats);
    // Bandwidth again after every group (and at the end): the machine is shared, the bound uses the best.
    if (!quick) bandwidth.push(await measureBandwidth({ bytes: 2 ** 30, rounds: 2 }));
  }

  // bench/gguf.ts: the GGUF row (GgufBackend ÷ raw node-llama-cpp), on the synthetic GGUF files of
  // the smallest shape; its own child processes, outside the budget.
  let ggufVsRaw: BenchRun["ggufVsRaw"];
  const ggufGroup = entries.find((e) => e.backend === "gguf" && !e.real && e.status === "ok")?.group;
  if (!quick && ggufGroup) {
    const files = entries.filter((e) => e.backend === "gguf" && e.group === ggufGroup && e.status === "ok").map((e) => e.path);
    console.log(`\n== GgufBackend ÷ raw node-llama-cpp, CPU time per token (bench/gguf.ts): ${ggufGroup}`);
    try {
      const { benchGguf, formatGgufBench } = await import("./gguf.js");
      ggufVsRaw = await benchGguf(files, {
        onPair: (row, p) => console.log(`  ${basename(row.model)} ${row.threads} thr, ${p.first} first: ratio ${p.ratio.toFixed(3)}`),
      });
      console.log(formatGgufBench(ggufVsRaw));
    } catch (error) {
      ggufVsRaw = { error: errorText(error) };
    }
  }

  // bench/json-schema.ts (JSON-schema constrained decoding) and bench/chat.ts (KV-cache reuse
  // between chat turns), imported only here so workers stay light; their time is not part of the
  // budget above.
  const optional: BenchRun["optional"] = {};
  // bench/mlx-lm.ts: mlx-node ÷ mlx-lm on the same directories (also alone with --models mlx-lm).
  if (!mlxReason && (!filters || filters.includes("mlx-lm"))) {
    const name = "mlx-node MLX ÷ mlx-lm (bench/mlx-lm.ts)";
    const t0 = performance.now();
    console.log(`\n== ${name}`);
    try {
      const { benchMlxLm, formatMlxLmBench } = await import("./mlx-lm.js");
      const result = await benchMlxLm({ rounds: quick ? 2 : Math.max(3, repeats), budgetS: quick ? 300 : 900, syntheticDir: synthDir });
      const text = formatMlxLmBench(result);
      console.log(text);
      optional[name] = { seconds: (performance.now() - t0) / 1000, text, result };
    } catch (error) {
      optional[name] = { seconds: (performance.now() - t0) / 1000, error: errorText(error) };
    }
  }
  if (!filters && !quick) {
    const sections: [string, () => Promise<{ text: string; result: unknown }>][] = [
      ["JSON-schema constrained decoding (bench/json-schema.ts)", async () => {
        const { benchJsonSchema, formatJsonSchemaBench } = await import("./json-schema.js");
        const result = await benchJsonSchema({ repeats, modelsDir: realRoot });
        return { text: formatJsonSchemaBench(result), result };
      }],
      ["Chat: time to first token of turn 2 vs turn 1 (bench/chat.ts)", async () => {
        const { benchChat, formatChatBench } = await import("./chat.js");
        const result = await benchChat({ repeats, modelsDir: realRoot, syntheticDir: synthDir });
        return { text: formatChatBench(result), result };
      }],
      ["Concurrent requests: aggregate decode tok/s at 2-16 ÷ 1, TTFT beside 7 (bench/batching.ts)", async () => {
        const { benchBatching, formatBatchingBench } = await import("./batching.js");
        const result = await benchBatching({ repeats, modelsDir: realRoot, syntheticDir: synthDir });
        return { text: formatBatchingBench(result), result };
      }],
    ];
    for (const [name, run] of sections) {
      const t0 = performance.now();
      console.log(`\n== ${name}`);
      try {
        const { text, result } = await run();
        console.log(text);
        optional[name] = { seconds: (performance.now() - t0) / 1000, text, result };
      } catch (error) {
        optional[name] = { seconds: (performance.now() - t0) / 1000, error: errorText(error) };
      }
    }
  }

  // Synthetic models removed while the run was going (bench/synthetic rewriting them) leave no row.
  const gone = entries.filter((e) => !existsSync(e.path) && !e.samples.length);
  if (gone.length) notes.push(`Removed during the run, not measured: ${gone.map((e) => e.id).join(", ")}.`);
  entries = entries.filter((e) => !gone.includes(e));
  const bw = mergeBandwidth(bandwidth);
  for (const e of entries) summarizeEntry(e, bw);
  pairRatios(entries);
  notes.push(
    "Prefill prompts keep only their first token in the KV cache, so prompt N evaluates N − 1 tokens; decode is greedy with ignoreEos, its prompt (\"Once upon a time\") evaluated before the first token.",
    "Load 'first' is the first load in a fresh worker process (includes one-time engine/library start-up); 'reload' is an unload + load in the same process.",
    "Peak RSS: whole worker process (Node + engine + model), sampled every 10 ms during each sample; HWM is the kernel's VmHWM of the worker.",
    "MLX rows: weights are what the engine holds after loading (`info.weightBytes`, in its compute dtype, shown in brackets); the bound divides by those bytes.",
  );
  const run: BenchRun = {
    date: `${started.getFullYear()}-${String(started.getMonth() + 1).padStart(2, "0")}-${String(started.getDate()).padStart(2, "0")}`,
    startedAt: started.toISOString(), durationS: (Date.now() - started.getTime()) / 1000, quick,
    settings: {
      repeats, budgetS, ...(filters ? { models: filters } : {}),
      protocol: "Protocol: 512-token prompt (less when the context is smaller or the budget cut it), 128 decoded tokens, interleaved repeats.",
    },
    machine: machine(root), bandwidth: bw, entries, ...(ggufVsRaw ? { ggufVsRaw } : {}), notes, optional,
  };
  const files = writeResults(resolve(values.out ?? join(root, "bench/results")), `${run.date}${quick ? "-quick" : ""}`, run, toSvg(run));
  console.log(`\n${toMarkdown(run)}\nwrote ${files.join(", ")} (${Math.round(run.durationS)} s)`);
}

/** `--make-models`: writes the standard synthetic models (bench/synthetic) that are missing. */
async function makeSyntheticModels(dir: string): Promise<void> {
  const { makeModel } = await import("./synthetic/make-model.js");
  for (const shape of ["smollm2-135m", "qwen2.5-0.5b"]) {
    for (const [format, dtype, name] of [["mlx", "float16", `${shape}-mlx-float16`], ["mlx", "q4", `${shape}-mlx-q4`], ["gguf", "f16", `${shape}-f16.gguf`],
      ["gguf", "q8_0", `${shape}-q8_0.gguf`], ["gguf", "q4_0", `${shape}-q4_0.gguf`]] as const) {
      if (existsSync(join(dir, name))) continue;
      console.log(`writing ${name}`);
      makeModel({ shape, format, dtype, out: join(dir, name) });
    }
  }
}

if (process.argv[2] === "--worker") await runWorker(JSON.parse(process.argv[3] ?? "{}") as WorkerSpec);
else await main();
