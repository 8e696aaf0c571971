/**
 * `npm run bench` (node dist/bench/run.js): every available backend on every model, with the
 * ratios the project tracks, written to bench/results/<date>.{json,md,svg}.
 *
 *   node dist/bench/run.js [--quick] [--models a,b] [--repeats N] [--out DIR] [--budget SECONDS] [--make-models]
 *
 * The run, in order (see main):
 * 1. Models: the real ones in shared/models (stories260K as hf-f32, hf-bf16, mlx-4bit on MLX and
 *    stories260K.gguf on GGUF) and every synthetic model in bench/.models/ (bench/synthetic/), in
 *    groups of one shape. `--models` keeps entries whose id contains one of the comma-separated names.
 * 2. The timed groups share the time budget (`--budget`). Each model gets its own worker process
 *    (bench/measure.ts), started one at a time (first load timed), then probed with tiny requests
 *    to learn its speed. The planner fits the protocol (512-token prompt, 128 decoded tokens,
 *    `--repeats` samples, a reload per sample) into the group's share, cutting the most expensive
 *    entries first (no reloads, then fewer tokens, then fewer repeats, then skipping them, always
 *    with the reason in the report). Repeats are interleaved: in each round every model runs one
 *    sample, in a rotating order, so noise of the shared machine hits all of them.
 * 3. Outside the budget: bench/gguf.ts (GgufBackend ÷ raw node-llama-cpp in CPU time per token, on
 *    the smallest synthetic GGUF shape; not with --quick), bench/mlx-lm.ts (mlx-node ÷ mlx-lm;
 *    `--models mlx-lm` runs it alone), then, not with --quick or --models, bench/json-schema.ts,
 *    bench/chat.ts and bench/batching.ts (concurrent requests, interleaved conversations).
 */
import { execFileSync, fork, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { arch, availableParallelism, cpus, platform, release, totalmem } from "node:os";
import { basename, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { packageRoot } from "../lib/native.js";
import { measureBandwidth, mergeBandwidth, type BandwidthResult } from "./bandwidth.js";
import {
  fitCounts, runWorker, type SampleProgress, type SampleResult, type WorkerCommand, type WorkerMessage, type WorkerReady, type WorkerSpec,
} from "./measure.js";
import { mlxUnavailableReason } from "./mlx.js";
import { pairRatios, summarizeEntry, toMarkdown, toSvg, writeResults, type BenchRun, type EntryResult, type ProbeRecord } from "./report.js";

const SCRIPT = fileURLToPath(import.meta.url);

/** The real models of shared/models: path, backend, weights. */
const REAL: readonly [string, "mlx" | "gguf", string][] = [
  ["stories260K/hf-f32", "mlx", "f32"], ["stories260K/hf-bf16", "mlx", "bf16"], ["stories260K/mlx-4bit", "mlx", "4bit"],
  ["stories260K/stories260K.gguf", "gguf", "f32"],
];

/** Defaults of a full run and of `--quick`. */
const DEFAULTS = {
  // mlxLmRounds: the fewest paired rounds of bench/mlx-lm.ts (a full run uses `repeats` when that is more).
  full: { repeats: 5, budgetS: 540, bandwidthBytes: 2 ** 30, bandwidthRounds: 5, mlxLmRounds: 3, mlxLmBudgetS: 900 },
  quick: { repeats: 2, budgetS: 100, bandwidthBytes: 2 ** 29, bandwidthRounds: 3, mlxLmRounds: 2, mlxLmBudgetS: 300 },
} as const;
/** The bandwidth re-measured after every group (the bound uses the machine's best): one 1 GiB buffer, two sweeps. */
const BANDWIDTH_RECHECK = { bytes: 2 ** 30, rounds: 2 };
/** Time kept back from the groups for summaries and writing the results. */
const RESULTS_RESERVE_MS = { full: 12_000, quick: 3_000 };
/** A group whose share of the budget would be smaller than this is skipped: it could not load and probe a model. */
const MIN_GROUP_SHARE_MS = 5_000;

/** Protocol sizes, largest (the real protocol) first: the planner steps down this list to fit the budget. */
const PROTOCOL_SIZES: readonly { prefillTokens: number; decodeTokens: number }[] = [
  { prefillTokens: 512, decodeTokens: 128 }, { prefillTokens: 256, decodeTokens: 64 }, { prefillTokens: 128, decodeTokens: 32 },
  { prefillTokens: 64, decodeTokens: 16 }, { prefillTokens: 32, decodeTokens: 8 },
];
/** Probe requests, growing until one takes longer than PROBE_LONG_ENOUGH_MS (the first one also times a reload). */
const PROBE_SIZES: readonly { prefillTokens: number; decodeTokens: number }[] = [
  { prefillTokens: 4, decodeTokens: 4 }, { prefillTokens: 32, decodeTokens: 16 }, { prefillTokens: 128, decodeTokens: 32 },
];
const PROBE_LONG_ENOUGH_MS = 1_500;
/** Probes use prompt variants from here on, so a probe's prompt never matches a sample's (samples use their round number). */
const PROBE_PROMPT_VARIANT = 100;
/** A probe may take this share of the group's budget, within the bounds. */
const PROBE_TIME = { share: 0.05, minMs: 4_000, maxMs: 10_000 };
/** Later probes wait at least this long: a larger request on a slow model legitimately takes a while. */
const LATER_PROBE_MIN_MS = 30_000;
/** Per-request overhead assumed at least (IPC, prompt building, RSS sampling) when the probe's own figure is smaller. */
const MIN_REQUEST_OVERHEAD_MS = 30;
/** Context size assumed for a model whose worker did not report one. */
const FALLBACK_CONTEXT = 2048;

/** A worker that has not loaded its model by then is stopped. */
const LOAD_TIMEOUT_MS = 180_000;
/** No new model starts loading after this share of the group's budget: the rest is for measuring. */
const LAST_START_SHARE = 0.6;
/** A group may overrun its budget by this factor before its remaining rounds are dropped (estimates are rough). */
const GROUP_OVERRUN = 1.25;
/** Time set aside per model for reading its memory and closing its worker. */
const CLOSE_MS_PER_MODEL = 500;
/** A sample may take this many times its estimate plus the slack before its worker is stopped. */
const SAMPLE_TIMEOUT = { factor: 4, slackMs: 20_000 };
const MEMORY_REQUEST_TIMEOUT_MS = 10_000;
/** A worker that has not unloaded and exited by then is killed. */
const EXIT_TIMEOUT_MS = 30_000;
/** A synthetic model whose files changed more recently than this is probably still being written. */
const FRESH_FILE_MS = 30_000;

/** A worker command without its `id` (WorkerHandle numbers them); distributes over the union's members. */
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
      return await this.request<{ vmHwmBytes?: number }>({ cmd: "exit" }, EXIT_TIMEOUT_MS);
    } catch {
      this.kill();
      return undefined;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Planning

/** What the probes taught about one model, per token and per request. */
interface Speed { prefillMsPerToken: number; decodeMsPerToken: number; overheadMs: number; reloadMs: number; contextSize: number }
/** The protocol one model will run; the planner cuts it down. A GGUF file and its raw baseline share one. */
interface Protocol { size: number; repeats: number; reload: boolean; skip: boolean }
/** A model of the running group: its entry, its worker, its speed and its protocol. */
interface Member { entry: EntryResult; worker: WorkerHandle; speed: Speed; protocol: Protocol }

const tokenCounts = (size: number, contextSize: number) => fitCounts(PROTOCOL_SIZES[size].prefillTokens, PROTOCOL_SIZES[size].decodeTokens, contextSize);
function estimatedSampleMs(m: Member): number {
  const c = tokenCounts(m.protocol.size, m.speed.contextSize);
  return c.prefillTokens * m.speed.prefillMsPerToken + c.decodeTokens * m.speed.decodeMsPerToken + m.speed.overheadMs +
    (m.protocol.reload ? m.speed.reloadMs : 0);
}
const estimatedMemberMs = (m: Member) => (m.protocol.skip ? 0 : m.protocol.repeats * estimatedSampleMs(m));

/**
 * The steps the planner takes down, as (protocol size, repeats): fewer tokens first while keeping
 * every repeat, then down to 3 repeats (the fewest a median and a spread still mean something
 * with), then 2 and 1 on the smallest sizes.
 */
function cutLadder(repeats: number): { size: number; repeats: number }[] {
  const steps = [[0, repeats], [1, repeats], [2, repeats], [2, 3], [3, 3], [3, 2], [4, 2], [4, 1]];
  const ladder: { size: number; repeats: number }[] = [];
  for (const [size, wanted] of steps) {
    const step = { size, repeats: Math.min(wanted, repeats) };
    if (!ladder.some((s) => s.size === step.size && s.repeats === step.repeats)) ladder.push(step);
  }
  return ladder;
}

/**
 * Cuts the most expensive protocol one step at a time until the group fits `budgetMs`: first its
 * reloads, then down {@link cutLadder}, then the entry itself.
 */
function fitToBudget(members: Member[], budgetMs: number, repeats: number): void {
  const ladder = cutLadder(repeats);
  const cutOnce = (p: Protocol): void => {
    const at = ladder.findIndex((s) => s.size === p.size && s.repeats === p.repeats);
    if (p.reload) p.reload = false;
    else if (at >= 0 && at < ladder.length - 1) ({ size: p.size, repeats: p.repeats } = ladder[at + 1]);
    else p.skip = true;
  };
  const protocols = [...new Set(members.map((m) => m.protocol))];
  const cost = (p: Protocol) => members.filter((m) => m.protocol === p).reduce((n, m) => n + estimatedMemberMs(m), 0);
  for (;;) {
    const total = protocols.reduce((n, p) => n + cost(p), 0);
    const mostExpensive = protocols.filter((p) => !p.skip).sort((a, b) => cost(b) - cost(a))[0];
    if (total <= budgetMs || !mostExpensive) break;
    cutOnce(mostExpensive);
  }
  for (const m of members) {
    const c = tokenCounts(m.protocol.size, m.speed.contextSize);
    m.entry.plan = { ...c, repeats: m.protocol.repeats, reload: m.protocol.reload, reduced: m.protocol.size > 0 || m.protocol.repeats < repeats };
    if (m.protocol.skip) {
      skip(m.entry, `over the time budget: even ${c.prefillTokens}/${c.decodeTokens} tokens once needs ~${secs(estimatedSampleMs(m))} ` +
        `of the ${secs(budgetMs)} left for the group; ${speedNote(m.speed)}`);
    }
  }
}

function speedNote(speed: Speed): string {
  return `probe: prefill ≈ ${(1000 / speed.prefillMsPerToken).toPrecision(3)} tok/s, decode ≈ ${(1000 / speed.decodeMsPerToken).toPrecision(3)} tok/s`;
}

function skip(entry: EntryResult, reason: string): void {
  entry.status = "skipped";
  entry.reason = reason;
  console.log(`  skip ${entry.id}: ${reason}`);
}

/** Requests of growing size (the first with a timed reload) until one takes PROBE_LONG_ENOUGH_MS. */
async function probe(entry: EntryResult, worker: WorkerHandle, capMs: number): Promise<Speed | undefined> {
  let speed: Speed | undefined;
  for (const [i, size] of PROBE_SIZES.entries()) {
    const req = { ...size, reload: i === 0, variant: PROBE_PROMPT_VARIANT + i, progress: true };
    const record: ProbeRecord = { req, ms: 0 };
    entry.probes.push(record);
    const progress = new Map<string, SampleProgress>();
    const start = performance.now();
    // The first probe also reloads the model: allow for the load on top of the cap.
    const timeoutMs = i === 0 ? capMs + 2 * (entry.coldLoadMs ?? 0) : Math.max(capMs, LATER_PROBE_MIN_MS);
    try {
      const r = await worker.request<SampleResult>({ cmd: "sample", req }, timeoutMs, (p) => progress.set(p.phase, p));
      record.ms = performance.now() - start;
      record.result = r;
      const measuredMs = r.ttftMs + r.callerMsPerToken * Math.max(0, r.generatedTokens - 1) + (r.loadMs ?? 0);
      speed = {
        prefillMsPerToken: r.ttftMs / Math.max(1, r.evaluatedPromptTokens),
        decodeMsPerToken: r.callerMsPerToken,
        overheadMs: Math.max(MIN_REQUEST_OVERHEAD_MS, record.ms - measuredMs),
        reloadMs: speed?.reloadMs ?? r.loadMs ?? entry.coldLoadMs ?? 0,
        contextSize: entry.contextSize ?? FALLBACK_CONTEXT,
      };
      if (record.ms > PROBE_LONG_ENOUGH_MS) break;
    } catch (error) {
      record.ms = performance.now() - start;
      record.error = errorText(error);
      record.progress = [...progress.values()];
      if (speed) break; // a larger probe failed: plan with the smaller one
      const seen = record.progress.map((p) => `${p.phase} ${p.tokens} tokens in ${secs(p.ms)}`).join(", ");
      skip(entry, `too slow for the time budget: the probe (${size.prefillTokens}-token prompt + ${size.decodeTokens} tokens) did not finish in ${secs(record.ms)}` +
        `${seen ? ` (${seen})` : ""}: ${record.error}`);
      return undefined;
    }
  }
  return speed;
}

// ---------------------------------------------------------------------------------------------
// A group of models with one shape

/** Starts each model's worker, loads and probes it; returns the members that can be measured. */
async function startMembers(entries: EntryResult[], budgetMs: number, repeats: number, start: number): Promise<Member[]> {
  const members: Member[] = [];
  for (const entry of entries) {
    if (entry.status !== "ok") continue;
    if (!existsSync(entry.path)) {
      skip(entry, "gone: the file was removed during the run");
      continue;
    }
    if (performance.now() > start + budgetMs * LAST_START_SHARE) {
      skip(entry, "over the time budget before it could start");
      continue;
    }
    // Raw node-llama-cpp runs with the threads GgufBackend chose for the same file.
    const twin = members.find((m) => m.entry.backend === "gguf" && m.entry.path === entry.path);
    const worker = new WorkerHandle({ kind: entry.backend, path: entry.path, ...(entry.backend === "raw" ? { threads: twin?.entry.threads ?? 1 } : {}) });
    try {
      const ready = await worker.whenReady(LOAD_TIMEOUT_MS);
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
    const probeCapMs = Math.min(PROBE_TIME.maxMs, Math.max(PROBE_TIME.minMs, budgetMs * PROBE_TIME.share));
    const speed = await probe(entry, worker, probeCapMs);
    if (!speed) {
      worker.kill();
      continue;
    }
    console.log(`  ${entry.id}: first load ${secs(entry.coldLoadMs ?? 0)}, ${speedNote(speed)}`);
    // A GGUF file and its raw baseline share one protocol, so they always run the same one.
    const protocol = twin && entry.backend === "raw" ? twin.protocol : { size: 0, repeats, reload: true, skip: false };
    members.push({ entry, worker, speed, protocol });
  }
  return members;
}

/** One sample per member per round, rotating who goes first, until the repeats are done or the group overruns. */
async function measureRounds(members: Member[], repeats: number, overrun: () => boolean): Promise<void> {
  for (let round = 0; round < repeats; round++) {
    const inRound = members.filter((m) => m.entry.status === "ok" && m.protocol.repeats > round && !m.entry.reason);
    if (!inRound.length) break;
    if (overrun()) {
      for (const m of inRound) m.entry.reason = `stopped after ${m.entry.samples.length} samples: the group ran over its time budget`;
      break;
    }
    for (let i = 0; i < inRound.length; i++) {
      const m = inRound[(i + round) % inRound.length];
      const plan = m.entry.plan!;
      try {
        const s = await m.worker.request<SampleResult>(
          { cmd: "sample", req: { prefillTokens: plan.prefillTokens, decodeTokens: plan.decodeTokens, reload: plan.reload, variant: round } },
          SAMPLE_TIMEOUT.factor * estimatedSampleMs(m) + SAMPLE_TIMEOUT.slackMs,
        );
        m.entry.samples.push(s);
        console.log(`  [${round + 1}/${repeats}] ${m.entry.id}: TTFT ${s.ttftMs.toFixed(0)} ms, prefill ${s.prefillTps.toFixed(1)} tok/s, decode ${s.decodeTps.toFixed(1)} tok/s` +
          `${s.mlx?.derived ? `, outside eval ${(s.mlx.derived.outsideShare * 100).toFixed(1)}%` : ""}`);
      } catch (error) {
        m.entry.reason = `sample ${round + 1} failed: ${errorText(error)}`;
        if (!m.entry.samples.length) m.entry.status = "failed";
        console.log(`  ${m.entry.id}: ${m.entry.reason}`);
      }
    }
  }
}

async function runGroup(entries: EntryResult[], budgetMs: number, repeats: number): Promise<void> {
  const start = performance.now();
  console.log(`\n== ${entries[0].group}: ${entries.length} models, ${secs(budgetMs)} budget`);
  const members = await startMembers(entries, budgetMs, repeats, start);
  fitToBudget(members, start + budgetMs - performance.now() - CLOSE_MS_PER_MODEL * members.length, repeats);
  for (const m of members.filter((x) => x.protocol.skip)) await m.worker.close();
  const active = members.filter((m) => !m.protocol.skip);
  for (const m of active) {
    const p = m.entry.plan!;
    console.log(`  plan ${m.entry.id}: ${p.prefillTokens}/${p.decodeTokens} tokens × ${p.repeats}${p.reload ? " with reloads" : ""}` +
      `${p.reduced ? " (cut to fit the budget)" : ""}, ~${secs(estimatedMemberMs(m))}`);
  }
  await measureRounds(active, repeats, () => performance.now() > start + budgetMs * GROUP_OVERRUN);
  for (const m of active) {
    const memory = await m.worker.request<{ vmHwmBytes?: number }>({ cmd: "memory" }, MEMORY_REQUEST_TIMEOUT_MS).catch(() => undefined);
    m.entry.vmHwmBytes = memory?.vmHwmBytes;
  }
  for (const m of active) await m.worker.close();
  console.log(`  group done in ${secs(performance.now() - start)}`);
}

// ---------------------------------------------------------------------------------------------
// Models

/** Whether the dynamic loader knows libopenblas.so.0 (what MLX_NODE_BLAS=openblas loads). */
function openBlasPresent(): boolean {
  try {
    return execFileSync("ldconfig", ["-p"], { encoding: "utf8" }).includes("libopenblas.so.0");
  } catch {
    return false;
  }
}

function discover(realRoot: string, synthDir: string): EntryResult[] {
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
      const m = name.slice(0, -".gguf".length).match(/^(?<shape>.*)-(?<dtype>[^-]+)$/);
      if (m) synth.push(make(name, m.groups!.shape, false, "gguf", m.groups!.dtype, path), make(`${name} raw`, m.groups!.shape, false, "raw", m.groups!.dtype, path));
    } else if (existsSync(join(path, "config.json"))) {
      const m = name.match(/^(?<shape>.*)-mlx-(?<dtype>.+)$/);
      synth.push(make(name, m ? m.groups!.shape : name, false, "mlx", m ? m.groups!.dtype : "mlx", path));
    }
  }
  // A model written right now (bench/synthetic running) is not benchmarked half-written.
  const newest = (p: string): number => (statSync(p).isDirectory() ? Math.max(0, ...readdirSync(p).map((f) => newest(join(p, f)))) : statSync(p).mtimeMs);
  for (const e of synth) {
    if (Date.now() - newest(e.path) < FRESH_FILE_MS) Object.assign(e, { status: "skipped", reason: `its files changed in the last ${secs(FRESH_FILE_MS)} (still being written?)` });
  }
  const size = (e: EntryResult) => (statSync(e.path).isDirectory() ? readdirSync(e.path).reduce((n, f) => n + statSync(join(e.path, f)).size, 0) : statSync(e.path).size);
  // Smallest groups first, and the smallest models first within a group (the budget cuts the big ones).
  const sizes = new Map(synth.map((e) => [e, size(e)]));
  const groupSize = new Map<string, number>();
  for (const e of synth) groupSize.set(e.group, (groupSize.get(e.group) ?? 0) + sizes.get(e)!);
  synth.sort((a, b) => groupSize.get(a.group)! - groupSize.get(b.group)! || a.group.localeCompare(b.group) || sizes.get(a)! - sizes.get(b)! || a.id.localeCompare(b.id));
  return [...out, ...synth];
}

/** The entries this run measures (filters, --quick's smallest synthetic group, MLX availability), with notes on what was left out. */
function selectEntries(options: RunOptions, realRoot: string, synthDir: string, notes: string[]): EntryResult[] {
  const { filters, quick } = options;
  let entries = discover(realRoot, synthDir).filter((e) => !filters || filters.some((f) => e.id.toLowerCase().includes(f) || e.group.toLowerCase().includes(f)));
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
  return entries;
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

// ---------------------------------------------------------------------------------------------
// The run

/** The MLX runtime a worker reported (device, version), for the machine record. */
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
  const rt = runtime as { device?: string; mlxVersion?: string; blas?: { library: string } } | undefined;
  return {
    cpu: cpus()[0]?.model ?? "unknown CPU", cores: availableParallelism(), memoryGiB: totalmem() / 2 ** 30, platform: `${platform()}-${arch()} ${release()}`,
    node: process.version, mlx: rt ? `${rt.mlxVersion} (${rt.device}${rt.blas ? `, BLAS ${rt.blas.library}` : ""})` : undefined, nodeLlamaCpp, commit,
  };
}

interface RunOptions { quick: boolean; repeats: number; budgetS: number; filters?: string[]; out?: string; makeModels: boolean }

const USAGE = "usage: node dist/bench/run.js [--quick] [--models a,b] [--repeats N] [--out DIR] [--budget SECONDS] [--make-models]";

function parseOptions(): RunOptions | undefined {
  const { values } = parseArgs({
    options: {
      quick: { type: "boolean" }, models: { type: "string" }, repeats: { type: "string" }, out: { type: "string" },
      budget: { type: "string" }, "make-models": { type: "boolean" }, help: { type: "boolean" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return undefined;
  }
  const quick = values.quick ?? false;
  const defaults = quick ? DEFAULTS.quick : DEFAULTS.full;
  const filters = values.models?.split(",").map((s) => s.trim().toLowerCase()).filter(Boolean);
  return {
    quick,
    repeats: Math.max(1, Math.floor(Number(values.repeats ?? defaults.repeats))) || 1,
    budgetS: Number(values.budget ?? defaults.budgetS),
    ...(filters ? { filters } : {}),
    ...(values.out !== undefined ? { out: values.out } : {}),
    makeModels: values["make-models"] ?? false,
  };
}

/** The timed groups, each with an equal share of what is left of the budget; returns every bandwidth measurement. */
async function runTimedGroups(entries: EntryResult[], options: RunOptions): Promise<BandwidthResult[]> {
  const defaults = options.quick ? DEFAULTS.quick : DEFAULTS.full;
  const deadline = performance.now() + options.budgetS * 1000;
  const bandwidth = [await measureBandwidth({ bytes: defaults.bandwidthBytes, rounds: defaults.bandwidthRounds })];
  console.log(`memory read bandwidth: ${bandwidth[0].bestReadGBs.toFixed(1)} GB/s (1 thread ${bandwidth[0].readGBs.toFixed(1)}, copy ${bandwidth[0].copyGBs.toFixed(1)})`);
  const groups = [...new Set(entries.map((e) => e.group))];
  const reserveMs = options.quick ? RESULTS_RESERVE_MS.quick : RESULTS_RESERVE_MS.full;
  for (const [i, group] of groups.entries()) {
    const shareMs = (deadline - reserveMs - performance.now()) / (groups.length - i);
    const members = entries.filter((e) => e.group === group);
    if (shareMs < MIN_GROUP_SHARE_MS) {
      for (const e of members) if (e.status === "ok") skip(e, "the run's time budget was used up by earlier models");
      continue;
    }
    await runGroup(members, shareMs, options.repeats);
    // The machine is shared: measure again after every group, the bound uses the best.
    if (!options.quick) bandwidth.push(await measureBandwidth(BANDWIDTH_RECHECK));
  }
  return bandwidth;
}

/** bench/gguf.ts on the synthetic GGUF files of the smallest shape (its own child processes, outside the budget). */
async function runGgufRow(entries: EntryResult[]): Promise<BenchRun["ggufVsRaw"]> {
  const group = entries.find((e) => e.backend === "gguf" && !e.real && e.status === "ok")?.group;
  if (!group) return undefined;
  const files = entries.filter((e) => e.backend === "gguf" && e.group === group && e.status === "ok").map((e) => e.path);
  console.log(`\n== GgufBackend ÷ raw node-llama-cpp, CPU time per token (bench/gguf.ts): ${group}`);
  try {
    const { benchGguf, formatGgufBench } = await import("./gguf.js");
    const result = await benchGguf(files, {
      onPair: (row, p) => console.log(`  ${basename(row.model)} ${row.threads} thr, ${p.first} first: ratio ${p.ratio.toFixed(3)}`),
    });
    console.log(formatGgufBench(result));
    return result;
  } catch (error) {
    return { error: errorText(error) };
  }
}

/** A bench run after the timed groups: its name in the report and how to run it. */
type Section = [name: string, run: () => Promise<{ text: string; result: unknown }>];

/** The benches outside the budget (imported only here so workers stay light), each timed, failures recorded. */
async function runSections(sections: Section[]): Promise<BenchRun["optional"]> {
  const optional: BenchRun["optional"] = {};
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
  return optional;
}

function sectionsAfterGroups(options: RunOptions, realRoot: string, synthDir: string): Section[] {
  const defaults = options.quick ? DEFAULTS.quick : DEFAULTS.full;
  const { repeats, filters, quick } = options;
  const sections: Section[] = [];
  // mlx-node ÷ mlx-lm on the same directories; also alone with --models mlx-lm.
  if (!mlxUnavailableReason() && (!filters || filters.includes("mlx-lm"))) {
    sections.push(["mlx-node MLX ÷ mlx-lm (bench/mlx-lm.ts)", async () => {
      const { benchMlxLm, formatMlxLmBench } = await import("./mlx-lm.js");
      const rounds = quick ? defaults.mlxLmRounds : Math.max(defaults.mlxLmRounds, repeats);
      const result = await benchMlxLm({ rounds, budgetS: defaults.mlxLmBudgetS, syntheticDir: synthDir });
      return { text: formatMlxLmBench(result), result };
    }]);
  }
  if (filters || quick) return sections;
  sections.push(
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
    ["MLX concurrent requests by BLAS: the wheel's reference BLAS vs OpenBLAS (MLX_NODE_BLAS), one child process per setting and round (bench/batching.ts)", async () => {
      const { benchBatchingBlas, formatBatchingBench } = await import("./batching.js");
      if (mlxUnavailableReason()) return { text: `skipped: MLX unavailable (${mlxUnavailableReason()})`, result: null };
      if (!openBlasPresent()) return { text: "skipped: no libopenblas.so.0 here (Debian: apt-get install libopenblas0-pthread)", result: null };
      const result = await benchBatchingBlas(["linked", "openblas"], { repeats, only: ["mlx smollm2"] });
      return { text: formatBatchingBench(result), result };
    }],
    ["Interleaved conversations: turn-k TTFT of two taking turns ÷ one alone (bench/batching.ts)", async () => {
      const { benchInterleaved, formatInterleaved } = await import("./batching.js");
      // On this shared machine a wall-clock ratio needs about a dozen paired rounds; stories260K's cost about 1 s each.
      const tinyRounds = Math.max(repeats, 12);
      const cases: ["mlx" | "gguf", string, string, number][] = [
        ["gguf", "stories260K.gguf", join(realRoot, "stories260K/stories260K.gguf"), tinyRounds],
        ["gguf", "smollm2-135m q4_0 (synthetic)", join(synthDir, "smollm2-135m-q4_0.gguf"), repeats],
        ...(mlxUnavailableReason() ? [] : [["mlx", "stories260K hf-f32", join(realRoot, "stories260K/hf-f32"), tinyRounds] as ["mlx", string, string, number]]),
      ];
      const result = [];
      for (const [backend, name, path, rounds] of cases) if (existsSync(path)) result.push(await benchInterleaved(backend, name, path, { repeats: rounds }));
      return { text: formatInterleaved(result), result };
    }],
  );
  return sections;
}

const NOTES = [
  "Prefill prompts keep only their first token in the KV cache, so prompt N evaluates N − 1 tokens; decode is greedy with ignoreEos, its prompt (\"Once upon a time\") evaluated before the first token.",
  "Load 'first' is the first load in a fresh worker process (includes one-time engine/library start-up); 'reload' is an unload + load in the same process.",
  "Peak RSS: whole worker process (Node + engine + model), sampled every 10 ms during each sample; HWM is the kernel's VmHWM of the worker.",
  "MLX rows: weights are what the engine holds after loading (`info.weightBytes`, in its compute dtype, shown in brackets); the bound divides by those bytes.",
];

async function main(): Promise<void> {
  const options = parseOptions();
  if (!options) return;
  const root = packageRoot();
  const realRoot = process.env.MLX_NODE_SHARED_MODELS ?? resolve(root, "../shared/models");
  const synthDir = join(root, "bench/.models");
  const started = new Date();
  const notes: string[] = [];

  if (options.makeModels) await makeSyntheticModels(synthDir);
  let entries = selectEntries(options, realRoot, synthDir, notes);
  console.log(`mlx-node bench${options.quick ? " --quick" : ""}: ${entries.length} models, ${options.repeats} repeats, budget ${options.budgetS} s`);
  const bandwidth = await runTimedGroups(entries, options);
  const ggufVsRaw = options.quick ? undefined : await runGgufRow(entries);
  const optional = await runSections(sectionsAfterGroups(options, realRoot, synthDir));

  // Synthetic models removed while the run was going (bench/synthetic rewriting them) leave no row.
  const gone = entries.filter((e) => !existsSync(e.path) && !e.samples.length);
  if (gone.length) notes.push(`Removed during the run, not measured: ${gone.map((e) => e.id).join(", ")}.`);
  entries = entries.filter((e) => !gone.includes(e));
  const bw = mergeBandwidth(bandwidth);
  for (const e of entries) summarizeEntry(e, bw);
  pairRatios(entries);
  const run: BenchRun = {
    date: `${started.getFullYear()}-${String(started.getMonth() + 1).padStart(2, "0")}-${String(started.getDate()).padStart(2, "0")}`,
    startedAt: started.toISOString(), durationS: (Date.now() - started.getTime()) / 1000, quick: options.quick,
    settings: {
      repeats: options.repeats, budgetS: options.budgetS, ...(options.filters ? { models: options.filters } : {}),
      protocol: "Protocol: 512-token prompt (less when the context is smaller or the budget cut it), 128 decoded tokens, interleaved repeats.",
    },
    machine: machine(root), bandwidth: bw, entries, ...(ggufVsRaw ? { ggufVsRaw } : {}), notes: [...notes, ...NOTES], optional,
  };
  const files = writeResults(resolve(options.out ?? join(root, "bench/results")), `${run.date}${options.quick ? "-quick" : ""}`, run, toSvg(run));
  console.log(`\n${toMarkdown(run)}\nwrote ${files.join(", ")} (${Math.round(run.durationS)} s)`);
}

if (process.argv[2] === "--worker") await runWorker(JSON.parse(process.argv[3] ?? "{}") as WorkerSpec);
else await main();
