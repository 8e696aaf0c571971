/**
 * mlx-node's MLX engine ÷ mlx-lm (`generate_step`, its own decode loop) on the same directory, the
 * same libmlx, the same prompt ids, greedy: prefill and decode tokens/s, CPU time per decoded token
 * and MLX peak memory. Part of `npm run bench` (`--models mlx-lm` runs it alone); standalone:
 *   node dist/bench/mlx-lm.js [--rows a,b] [--rounds N] [--prefill P] [--decode D] [--budget S]
 *
 * Models: the real ones of tests/python/setup_models.py (SmolLM2-135M-Instruct and Gemma 3 270M,
 * `hf` float32 and `mlx-4bit` with float32 scales: both sides compute in float32), and the
 * Qwen2.5-0.5B-shape synthetic model (bench/synthetic, float16 and q4 with float16 scales: mlx-lm
 * computes in float16 there, mlx-node in float32 on the CPU; a third row casts mlx-lm to float32 to
 * compare like with like).
 *
 * Each side is its own process holding the model (bench/mlx_lm_side.py for mlx-lm, this file with
 * `--node-side` for mlx-node). Rounds are paired and interleaved: in each round both run the same
 * prompt, alternating who goes first; one warm-up round is not counted. Ratios are medians of the
 * per-round ratios, so the shared machine's drift hits both sides of a pair alike. Every prompt's
 * first token differs from the previous one's, so mlx-node's prefix cache never shortens a prefill.
 */
import { fork, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { MlxBackend } from "../lib/backends/mlx.js";
import { packageRoot } from "../lib/native.js";
import { median } from "./stats.js";

const SCRIPT = fileURLToPath(import.meta.url);
const python = process.env.MLX_NODE_PYTHON ?? "python3";

/** One side's measurement of one prompt. */
export interface SideSample {
  ttftMs: number;
  prefillTps: number;
  generatedTokens: number;
  decodeTps: number;
  decodeCpuMsPerToken: number;
  peakBytes: number;
  tokens: number[];
  /** mlx-node only: MLX ops per decoded token and the share of engine time outside evaluation. */
  opsPerToken?: number;
  outsideShare?: number;
}

export interface MlxLmRow {
  id: string;
  dir: string;
  /** dtype mlx-lm is cast to (undefined: the weights' dtype). */
  mlxLmDtype?: string;
  status: "ok" | "skipped" | "failed";
  reason?: string;
  ours: SideSample[];
  theirs: SideSample[];
  /** Medians of the per-round ratios (ours ÷ mlx-lm; CPU is mlx-lm ÷ ours so >1 is better for us too). */
  ratio?: { prefill: number; decode: number; cpuPerToken: number; peakMemory: number };
  /** Rounds whose greedy tokens were identical on both sides. */
  sameTokens?: number;
}

export interface MlxLmBenchResult {
  prefillTokens: number;
  decodeTokens: number;
  rounds: number;
  rows: MlxLmRow[];
  notes: string[];
}

/** A side process answering one JSON request at a time. */
interface Side {
  ready: Promise<unknown>;
  request(body: object): Promise<SideSample>;
  close(): void;
}

function pythonSide(dir: string, dtype: string | undefined): Side {
  const child = spawn(python, [join(packageRoot(), "bench", "mlx_lm_side.py"), dir, ...(dtype ? [dtype] : [])], { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async () => {
    const line = await lines.next();
    if (line.done) throw new Error(`mlx_lm_side.py exited: ${stderr.trim().split("\n").slice(-3).join(" | ")}`);
    return JSON.parse(line.value) as unknown;
  };
  return {
    ready: next(),
    async request(body) {
      child.stdin.write(`${JSON.stringify(body)}\n`);
      return (await next()) as SideSample;
    },
    close: () => {
      child.stdin.end(`${JSON.stringify({ exit: true })}\n`);
      setTimeout(() => child.kill("SIGKILL"), 5000).unref();
    },
  };
}

function nodeSide(dir: string): Side {
  const child: ChildProcess = fork(SCRIPT, ["--node-side", dir], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const waiting: { resolve(v: unknown): void; reject(e: Error): void }[] = [];
  child.on("message", (m: { error?: string }) => {
    const w = waiting.shift();
    if (m.error) w?.reject(new Error(m.error));
    else w?.resolve(m);
  });
  child.on("exit", (code) => {
    for (const w of waiting.splice(0)) w.reject(new Error(`the mlx-node side exited (code ${code})`));
  });
  const next = () => new Promise<unknown>((resolve, reject) => waiting.push({ resolve, reject }));
  return {
    ready: next(),
    request(body) {
      const answer = next();
      child.send(body);
      return answer as Promise<SideSample>;
    },
    close: () => {
      child.send({ exit: true });
      setTimeout(() => child.kill("SIGKILL"), 5000).unref();
    },
  };
}

/** The mlx-node side: load, then one greedy stream per request, timed as mlx_lm_side.py times mlx-lm. */
async function runNodeSide(dir: string): Promise<void> {
  const mlx = new MlxBackend();
  try {
    await mlx.load(dir);
    process.send!({ ready: true });
  } catch (error) {
    process.send!({ error: (error as Error).message });
    return;
  }
  process.on("message", async (m: { exit?: boolean; ids: number[]; decodeTokens: number }) => {
    if (m.exit) {
      await mlx.unload();
      process.exit(0);
    }
    try {
      await MlxBackend.setMemoryLimits({ resetPeak: true });
      const tokens: number[] = [];
      let first = 0;
      let last = 0;
      let cpuFirst = 0;
      let afterFirst = 0;
      const start = performance.now();
      const stream = mlx.generateStream(m.ids, { maxTokens: m.decodeTokens, temperature: 0, ignoreEos: true });
      for await (const chunk of stream) {
        if (!chunk.tokens.length) continue;
        last = performance.now();
        const cpu = process.cpuUsage();
        if (!first) [first, cpuFirst] = [last, cpu.user + cpu.system];
        else afterFirst += chunk.tokens.length;
        tokens.push(...chunk.tokens);
      }
      const cpu = process.cpuUsage();
      const result = await stream.result;
      if (result.usage.evaluatedPromptTokens !== m.ids.length) throw new Error(`the prefix cache shortened the prompt to ${result.usage.evaluatedPromptTokens} tokens`);
      const stats = mlx.lastGenerationStats;
      const sample: SideSample = {
        ttftMs: first - start,
        prefillTps: (m.ids.length * 1000) / (first - start),
        generatedTokens: tokens.length,
        decodeTps: (afterFirst * 1000) / (last - first),
        decodeCpuMsPerToken: (cpu.user + cpu.system - cpuFirst) / 1000 / afterFirst,
        peakBytes: (await MlxBackend.memory()).peakBytes,
        tokens,
        ...(stats ? { opsPerToken: stats.opsPerToken, outsideShare: (stats.graphBuildMs + stats.hostMs) / (stats.prefillMs + stats.decodeMs) } : {}),
      };
      process.send!(sample);
    } catch (error) {
      process.send!({ error: (error as Error).message });
    }
  });
}

/** Prompt ids come from [FIRST_PROMPT_ID, FIRST_PROMPT_ID + 900), below the vocabulary size: clear of the special ids. */
const FIRST_PROMPT_ID = 100;

/** Prompt ids of one round: the same on both sides, a different first token every round. */
function promptIds(length: number, round: number, vocabSize: number): number[] {
  const span = Math.max(1, Math.min(900, vocabSize - FIRST_PROMPT_ID));
  return Array.from({ length }, (_, i) => FIRST_PROMPT_ID + ((i === 0 ? round * 37 : i * 7919 + round * 104_729) % span));
}

/** config.json's vocab_size (a multimodal checkpoint's text_config's). */
function vocabSize(dir: string): number {
  const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as { vocab_size?: number; text_config?: { vocab_size?: number } };
  const size = config.vocab_size ?? config.text_config?.vocab_size;
  if (!size) throw new Error(`${dir}/config.json has no vocab_size`);
  return size;
}

const newRow = (id: string, dir: string, mlxLmDtype?: string): MlxLmRow => ({ id, dir, ...(mlxLmDtype ? { mlxLmDtype } : {}), status: "ok", ours: [], theirs: [] });

/** The rows to measure: the real models (if set up) and the Qwen2.5-0.5B-shape synthetic ones (if written). */
function plannedRows(syntheticDir: string, notes: string[]): MlxLmRow[] {
  const rows: MlxLmRow[] = [];
  const row = newRow;
  try {
    const out = execPython(["tests/python/setup_models.py", "--check"]);
    const models = (JSON.parse(out) as { models: Record<string, { hf: string; mlx4bit: string }> }).models;
    for (const [name, m] of Object.entries(models)) rows.push(row(`${name} hf (float32)`, m.hf), row(`${name} mlx-4bit (float32 scales)`, m.mlx4bit));
    if (Object.keys(models).length === 0) notes.push("Real models not set up: run `npm run setup:models` (tests/python/setup_models.py).");
  } catch (error) {
    notes.push(`Real models unavailable: ${(error as Error).message.split("\n")[0]}`);
  }
  for (const name of ["qwen2.5-0.5b-mlx-float16", "qwen2.5-0.5b-mlx-q4"]) {
    const dir = join(syntheticDir, name);
    if (!existsSync(join(dir, "config.json"))) {
      notes.push(`${name} not written: run \`npm run bench -- --make-models\`.`);
      continue;
    }
    rows.push(row(`${name} (mlx-lm float16)`, dir), row(`${name} (mlx-lm cast to float32)`, dir, "float32"));
  }
  return rows;
}

function execPython(args: string[]): string {
  const r = spawnSync(python, args, { cwd: packageRoot(), encoding: "utf8", timeout: 60_000 });
  if (r.error || r.status !== 0) throw new Error(r.error?.message ?? (r.stderr.trim().split("\n").pop() || `exit ${r.status}`));
  return r.stdout;
}

async function measureRow(row: MlxLmRow, rounds: number, prefillTokens: number, decodeTokens: number, deadline: number): Promise<void> {
  const ours = nodeSide(row.dir);
  const theirs = pythonSide(row.dir, row.mlxLmDtype);
  try {
    const vocab = vocabSize(row.dir);
    await Promise.all([ours.ready, theirs.ready]);
    for (let r = 0; r <= rounds; r++) {
      if (r > 0 && performance.now() > deadline) {
        row.reason = `stopped after ${r - 1} of ${rounds} rounds: over the time budget`;
        break;
      }
      const body = { ids: promptIds(prefillTokens, r, vocab), decodeTokens };
      const order = r % 2 === 0 ? [ours, theirs] : [theirs, ours];
      const [a, b] = [await order[0].request(body), await order[1].request(body)];
      if (r === 0) continue; // warm-up
      const [o, t] = order[0] === ours ? [a, b] : [b, a];
      row.ours.push(o);
      row.theirs.push(t);
      console.log(`  [${r}/${rounds}] ${row.id}: decode ${o.decodeTps.toFixed(1)} vs ${t.decodeTps.toFixed(1)} tok/s, prefill ${o.prefillTps.toFixed(0)} vs ${t.prefillTps.toFixed(0)} tok/s`);
    }
    if (row.ours.length === 0) throw new Error(row.reason ?? "no round finished");
    const per = (f: (o: SideSample, t: SideSample) => number) => median(row.ours.map((o, i) => f(o, row.theirs[i])));
    row.ratio = {
      prefill: per((o, t) => o.prefillTps / t.prefillTps),
      decode: per((o, t) => o.decodeTps / t.decodeTps),
      cpuPerToken: per((o, t) => t.decodeCpuMsPerToken / o.decodeCpuMsPerToken),
      peakMemory: per((o, t) => o.peakBytes / t.peakBytes),
    };
    row.sameTokens = row.ours.filter((o, i) => o.tokens.join() === row.theirs[i].tokens.join()).length;
  } catch (error) {
    row.status = "failed";
    row.reason = (error as Error).message;
  } finally {
    ours.close();
    theirs.close();
  }
}

/** A directory to measure: its label, and the dtype mlx-lm is cast to (default: the weights'). */
export interface MlxLmDir { id: string; dir: string; mlxLmDtype?: string }

/** Runs every row within `budgetS` seconds (rows past the budget are skipped with the reason). */
export async function benchMlxLm(options: {
  rounds: number; prefillTokens?: number; decodeTokens?: number; budgetS: number;
  /** Where the synthetic models are (the rows of `npm run bench`); not read when `dirs` is given. */
  syntheticDir?: string;
  /** These directories instead of the bench's rows (bench/moe.ts). */
  dirs?: MlxLmDir[];
  /** Keep only rows whose id contains one of these. */
  only?: string[];
}): Promise<MlxLmBenchResult> {
  const prefillTokens = options.prefillTokens ?? 128;
  const decodeTokens = options.decodeTokens ?? 64;
  const notes: string[] = [];
  const planned = options.dirs ? options.dirs.map((d) => newRow(d.id, d.dir, d.mlxLmDtype)) : plannedRows(options.syntheticDir ?? "", notes);
  const rows = planned.filter((r) => !options.only || options.only.some((o) => r.id.includes(o)));
  const deadline = performance.now() + options.budgetS * 1000;
  for (const [i, row] of rows.entries()) {
    if (performance.now() > deadline) {
      Object.assign(row, { status: "skipped", reason: "the time budget was used up by earlier rows" });
      continue;
    }
    console.log(`  ${row.id}`);
    const share = (deadline - performance.now()) / (rows.length - i);
    await measureRow(row, options.rounds, prefillTokens, decodeTokens, performance.now() + share);
    console.log(`  ${rowLine(row)}`);
  }
  return { prefillTokens, decodeTokens, rounds: options.rounds, rows, notes };
}

const fmt = (x: number | undefined, digits = 2) => (x === undefined || !Number.isFinite(x) ? "–" : x.toFixed(digits));
const med = (samples: SideSample[], key: keyof SideSample) => median(samples.map((s) => s[key] as number));

/** A markdown table of the rows. */
export function formatMlxLmBench(r: MlxLmBenchResult): string {
  const lines = [
    `mlx-node MLX ÷ mlx-lm generate_step, same directory and prompt ids, greedy; ${r.prefillTokens}-token prompt, ${r.decodeTokens} decoded tokens, ${r.rounds} paired rounds (medians; ratio = median of per-round ratios).`,
    "",
    "| model | prefill tok/s ours / mlx-lm | ÷ | decode tok/s ours / mlx-lm | ÷ | CPU ms/token ours / mlx-lm | mlx-lm ÷ ours | MLX peak MB ours / mlx-lm | ours ÷ | ops/token (ours) | same tokens |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
  ];
  return [...lines, ...r.rows.map(rowLine), ...r.notes.map((n) => `- ${n}`)].join("\n");
}

/** One row of the table (also printed as soon as the row is measured). */
function rowLine(row: MlxLmRow): string {
  if (!row.ratio) return `| ${row.id} | ${row.status}: ${row.reason ?? ""} |||||||||| `;
  const { ours, theirs, ratio } = row;
  return (
    `| ${row.id} | ${fmt(med(ours, "prefillTps"), 0)} / ${fmt(med(theirs, "prefillTps"), 0)} | **${fmt(ratio.prefill)}** | ` +
    `${fmt(med(ours, "decodeTps"), 1)} / ${fmt(med(theirs, "decodeTps"), 1)} | **${fmt(ratio.decode)}** | ` +
    `${fmt(med(ours, "decodeCpuMsPerToken"), 1)} / ${fmt(med(theirs, "decodeCpuMsPerToken"), 1)} | ${fmt(ratio.cpuPerToken)} | ` +
    `${fmt(med(ours, "peakBytes") / 2 ** 20, 0)} / ${fmt(med(theirs, "peakBytes") / 2 ** 20, 0)} | ${fmt(ratio.peakMemory)} | ` +
    `${fmt(med(ours, "opsPerToken"), 0)} | ${row.sameTokens}/${ours.length} |${row.reason ? ` ${row.reason}` : ""}`
  );
}

/** Standalone: node dist/bench/mlx-lm.js [--rows a,b] [--rounds N] [--prefill P] [--decode D] [--budget S] */
async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rows: { type: "string" }, rounds: { type: "string" }, prefill: { type: "string" }, decode: { type: "string" }, budget: { type: "string" } } });
  const result = await benchMlxLm({
    rounds: Number(values.rounds ?? 3), prefillTokens: Number(values.prefill ?? 128), decodeTokens: Number(values.decode ?? 64),
    budgetS: Number(values.budget ?? 900), syntheticDir: join(packageRoot(), "bench", ".models"), ...(values.rows ? { only: values.rows.split(",") } : {}),
  });
  console.log(formatMlxLmBench(result));
}

if (process.argv[2] === "--node-side") await runNodeSide(process.argv[3]);
else if (process.argv[1] === SCRIPT) await main();
