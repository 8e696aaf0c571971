/**
 * Results of `npm run bench`: the JSON record (raw samples, summaries, machine), a markdown
 * report and an SVG chart, written to `<out>/<date>[-quick].{json,md,svg}` (through `.tmp` files
 * renamed into place, so an interrupted run leaves no half-written result).
 */
import { mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import type { BandwidthResult } from "./bandwidth.js";
import { basename, join } from "node:path";
import { GGUF_VS_RAW_GOAL, ggufBenchTable, type GgufBenchResult } from "./gguf.js";
import { summarize, type SampleProgress, type SampleRequest, type SampleResult, type Spread } from "./measure.js";
import { summarizeEngine, type EngineSummary } from "./mlx.js";

export interface EntryPlan {
  prefillTokens: number;
  decodeTokens: number;
  repeats: number;
  reload: boolean;
  /** True when the time budget cut the protocol (fewer tokens, repeats or reloads than asked). */
  reduced: boolean;
}

export interface ProbeRecord {
  req: SampleRequest;
  ms: number;
  result?: SampleResult;
  error?: string;
  /** The last progress of each phase (kept when the probe was stopped for time). */
  progress?: SampleProgress[];
}

export interface EntrySummary {
  warmLoadMs?: Spread;
  ttftMs?: Spread;
  prefillTps?: Spread;
  decodeTps?: Spread;
  rssPeakBytes?: Spread;
  mlxPeakBytes?: Spread;
  /** bandwidth / weight bytes: the decode speed if every token only streamed the weights once. */
  boundTps?: number;
  decodeVsBound?: number;
  engine?: EngineSummary;
  /** GGUF entries: GgufBackend ÷ raw node-llama-cpp in the main loop, median of per-repeat ratios. */
  loopRatio?: { decode: number; prefill: number; pairs: number };
}

export interface EntryResult {
  id: string;
  group: string;
  real: boolean;
  /** `raw`: node-llama-cpp itself on the GGUF file, the baseline of GgufBackend. */
  backend: "mlx" | "gguf" | "raw";
  /** Short name of the weights (f32, bf16, q4_0...). */
  variant: string;
  path: string;
  status: "ok" | "skipped" | "failed";
  reason?: string;
  weightBytes?: number;
  contextSize?: number;
  threads?: number;
  info?: unknown;
  /** First load in a fresh process (includes the engine's one-time initialisation). */
  coldLoadMs?: number;
  rssAfterLoadBytes?: number;
  mlxActiveAfterLoadBytes?: number;
  /** The worker's kernel-measured peak RSS. */
  vmHwmBytes?: number;
  probes: ProbeRecord[];
  plan?: EntryPlan;
  samples: SampleResult[];
  summary?: EntrySummary;
}

export interface BenchRun {
  date: string;
  startedAt: string;
  durationS: number;
  quick: boolean;
  settings: { repeats: number; budgetS: number; models?: string[]; protocol: string };
  machine: Record<string, unknown>;
  bandwidth: BandwidthResult;
  entries: EntryResult[];
  /** bench/gguf.ts: GgufBackend ÷ raw node-llama-cpp in CPU time per token (the goal's measure), or why it did not run. */
  ggufVsRaw?: GgufBenchResult | { error: string };
  notes: string[];
  /** Results of the benches run after the timed groups (bench/json-schema.ts, bench/chat.ts). */
  optional: Record<string, { seconds: number; text?: string; result?: unknown; error?: string }>;
}

/** Fills `entry.summary` from its samples. */
export function summarizeEntry(entry: EntryResult, bandwidth: BandwidthResult): void {
  const s = entry.samples;
  const med = (v: number[]) => summarize(v)?.median ?? Number.NaN;
  const summary: EntrySummary = {
    warmLoadMs: summarize([...entry.probes.map((p) => p.result?.loadMs), ...s.map((x) => x.loadMs)]),
    ttftMs: summarize(s.map((x) => x.ttftMs)),
    prefillTps: summarize(s.map((x) => x.prefillTps)),
    decodeTps: summarize(s.map((x) => x.decodeTps)),
    rssPeakBytes: summarize(s.map((x) => x.rssPeakBytes)),
    mlxPeakBytes: summarize(s.map((x) => x.mlx?.peakBytes)),
    engine: summarizeEngine(s.map((x) => x.mlx), med),
  };
  if (entry.weightBytes) {
    summary.boundTps = (bandwidth.bestReadGBs * 1e9) / entry.weightBytes;
    if (summary.decodeTps) summary.decodeVsBound = summary.decodeTps.median / summary.boundTps;
  }
  entry.summary = summary;
}

/** Sets `summary.loopRatio` of each GGUF entry from its raw twin's samples of the same repeats. */
export function pairRatios(entries: readonly EntryResult[]): void {
  for (const e of entries) {
    const raw = entries.find((r) => r.backend === "raw" && r.path === e.path);
    if (e.backend !== "gguf" || !raw || !e.summary) continue;
    const n = Math.min(e.samples.length, raw.samples.length);
    const ratio = (k: "decodeTps" | "prefillTps") => summarize(e.samples.slice(0, n).map((s, i) => s[k] / raw.samples[i][k]))?.median ?? Number.NaN;
    if (n > 0) e.summary.loopRatio = { decode: ratio("decodeTps"), prefill: ratio("prefillTps"), pairs: n };
  }
}

// ---------------------------------------------------------------------------------------------
// Markdown

const sig = (v: number | undefined, digits = 3): string => {
  if (v === undefined || !Number.isFinite(v)) return "–";
  if (Math.abs(v) >= 10 ** digits) return Math.round(v).toLocaleString("en-US");
  return Number(v.toPrecision(digits)).toLocaleString("en-US", { maximumFractionDigits: 6 });
};
const mib = (b: number | undefined) => (b === undefined ? "–" : sig(b / 2 ** 20));
const pct = (v: number | undefined, d = 1) => (v === undefined || !Number.isFinite(v) ? "–" : `${(v * 100).toFixed(d)}%`);
const spread = (s: Spread | undefined, f: (v: number) => string = (v) => sig(v)) =>
  !s ? "–" : s.n === 1 ? `${f(s.median)} (n=1)` : `${f(s.median)} (${f(s.min)}–${f(s.max)})`;

export function entryLabel(e: EntryResult): string {
  return `${{ mlx: "MLX", gguf: "GgufBackend", raw: "raw node-llama-cpp" }[e.backend]} ${e.variant}`;
}

export function toMarkdown(run: BenchRun): string {
  const L: string[] = [];
  const m = run.machine;
  L.push(`# mlx-node bench, ${run.date}${run.quick ? " (quick)" : ""}`, "");
  L.push(`${m.cpu} × ${m.cores} cores, ${sig(Number(m.memoryGiB))} GiB, ${m.platform}, Node ${m.node}, MLX ${m.mlx ?? "n/a"}, node-llama-cpp ${m.nodeLlamaCpp ?? "n/a"}, commit ${m.commit ?? "?"}. ` +
    `Run took ${Math.round(run.durationS)} s (budget ${run.settings.budgetS} s). ${run.settings.protocol}`, "");
  L.push("Cells: median (min–max) over the samples (n per row). Shared, noisy 2-core machine: compare rows measured side by side in this run, not absolute numbers across runs.", "");
  L.push("## Models × backends", "");
  L.push("| model | backend | weights MiB | prompt / decode tokens | n | load ms: first / reload | TTFT ms | prefill tok/s | decode tok/s | peak RSS MiB | MLX peak MiB | decode ÷ bound |");
  L.push("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
  for (const e of run.entries) {
    const s = e.summary;
    if (e.status !== "ok" || !s) {
      L.push(`| ${e.group} | ${entryLabel(e)} | ${mib(e.weightBytes)} | – | – | ${sig(e.coldLoadMs)} / – | – | – | – | – | – | ${e.status}: ${e.reason ?? ""} |`);
      continue;
    }
    const p = e.plan;
    const counts = p ? `${e.samples[0]?.promptTokens ?? p.prefillTokens} / ${p.decodeTokens}${p.reduced ? " ᵇ" : ""}` : "–";
    const dtype = e.backend === "mlx" ? `, ${(e.info as { dtype?: string } | undefined)?.dtype ?? "?"} compute` : "";
    L.push(`| ${e.group} | ${entryLabel(e)} (${e.threads} thr${dtype}) | ${mib(e.weightBytes)} | ${counts} | ${e.samples.length} | ${sig(e.coldLoadMs)} / ${spread(s.warmLoadMs)} | ` +
      `${spread(s.ttftMs)} | ${spread(s.prefillTps)} | ${spread(s.decodeTps)} | ${spread(s.rssPeakBytes, mib)} (HWM ${mib(e.vmHwmBytes)}) | ` +
      `${spread(s.mlxPeakBytes, mib)} | ${pct(s.decodeVsBound)} of ${sig(s.boundTps)} |`);
  }
  L.push("", "Raw node-llama-cpp runs on the decode thread count GgufBackend starts from, for both phases (GgufBackend prefills on every core and times its first tokens to choose its decode count; bench/gguf.ts, below, compares the two pinned to the same threads). " +
    "ᵇ protocol cut to fit the time budget (see JSON `plan`). Bound = best read bandwidth / weight bytes (MLX: `info.weightBytes`; GGUF: file size).", "");

  const g = run.ggufVsRaw;
  if (g) {
    L.push(`## GgufBackend ÷ raw node-llama-cpp, CPU time per decoded token (bench/gguf.ts)`, "");
    L.push(...("error" in g ? [`Not measured: ${g.error}`] : ggufBenchTable(g)), "");
  }
  const loop = run.entries.filter((e) => e.summary?.loopRatio);
  if (loop.length) {
    L.push("Main loop, for reference (wall clock, GgufBackend and raw rows above, median of per-repeat ratios; too noisy to decide the goal): " +
      loop.map((e) => `${e.group} ${e.variant} decode ${e.summary!.loopRatio!.decode.toFixed(3)}, prefill ${e.summary!.loopRatio!.prefill.toFixed(3)}`).join("; ") + ".", "");
  }

  const mlx = run.entries.filter((e) => e.summary?.engine);
  if (mlx.length) {
    L.push("## MLX engine (decode request; formulas in bench/mlx.ts)", "");
    L.push("| model | ops / token | graph build ms / token | host ms / token | engine ms / token | outside evaluation (goal ≤ 5%) | caller ms / token | JS overhead | engine prefill tok/s |");
    L.push("|---|--:|--:|--:|--:|--:|--:|--:|--:|");
    for (const e of mlx) {
      const g = e.summary?.engine as EngineSummary;
      L.push(`| ${e.group} ${e.variant} | ${sig(g.opsPerToken)} | ${sig(g.graphBuildMsPerToken)} | ${sig(g.hostMsPerToken)} | ${sig(g.engineMsPerToken)} | ` +
        `${pct(g.outsideShare)}${g.outsideShare <= 0.05 ? " ✓" : " ✗"} | ${sig(g.callerMsPerToken)} | ${pct(g.jsOverhead)} | ${sig(g.enginePrefillTps)} |`);
    }
    L.push("", "outside evaluation = (graphBuildMs + hostMs) / (prefillMs + decodeMs); JS overhead = caller ms/token ÷ engine ms/token − 1, engine ms/token = decodeMs / (generated − 1).", "");
  }

  const b = run.bandwidth;
  L.push("## Memory bandwidth (same run)", "");
  L.push(`Best of ${b.rounds} sweeps of ${sig(b.bytes / 2 ** 30)} GiB (measured at the start and after every model group): read 1 thread (memchr) ${sig(b.readGBs)} GB/s, read ${b.threads} threads ${sig(b.readAllCoresGBs)} GB/s, ` +
    `copy 1 thread (memcpy, read + write) ${sig(b.copyGBs)} GB/s, JS Float64Array sum ${sig(b.jsReadGBs)} GB/s. Bound uses ${sig(b.bestReadGBs)} GB/s ` +
    `(the machine's best); a decode running on one thread is bound ${sig(b.bestReadGBs / b.readGBs, 2)}× lower.`, "");
  if (run.notes.length) L.push("## Notes", "", ...run.notes.map((n) => `- ${n}`), "");
  for (const [name, o] of Object.entries(run.optional)) {
    L.push(`## ${name}`, "", `Took ${Math.round(o.seconds)} s (outside the budget).`, "", "```", o.text ?? o.error ?? JSON.stringify(o.result, null, 1).slice(0, 4000), "```", "");
  }
  return L.join("\n");
}

// ---------------------------------------------------------------------------------------------
// Files

/** Writes `<dir>/<base>.json|.md|.svg` atomically and removes stray `*.tmp` files. */
export function writeResults(dir: string, base: string, run: BenchRun, svg: string): string[] {
  mkdirSync(dir, { recursive: true });
  const files: [string, string][] = [
    [`${base}.json`, `${JSON.stringify(run, null, 1)}\n`],
    [`${base}.md`, toMarkdown(run)],
    [`${base}.svg`, svg],
  ];
  const written: string[] = [];
  for (const [name, text] of files) {
    const path = join(dir, name);
    writeFileSync(`${path}.tmp`, text);
    renameSync(`${path}.tmp`, path);
    written.push(path);
  }
  for (const name of readdirSync(dir)) if (name.endsWith(".tmp")) rmSync(join(dir, name), { force: true });
  return written;
}

// ---------------------------------------------------------------------------------------------
// SVG chart (hand-written): decode and prefill tok/s per model × backend on log axes, then the
// tracked ratios.

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
const txt = (x: number, y: number, s: string, attrs = "") => `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${attrs}>${esc(s)}</text>`;
const rect = (x: number, y: number, w: number, h: number, attrs: string) =>
  `<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${Math.max(0, w).toFixed(1)}" height="${Math.max(0, h).toFixed(1)}" ${attrs}/>`;
const line = (x1: number, y1: number, x2: number, y2: number, attrs: string) =>
  `<line x1="${x1.toFixed(1)}" y1="${y1.toFixed(1)}" x2="${x2.toFixed(1)}" y2="${y2.toFixed(1)}" ${attrs}/>`;
const COLORS = { mlx: ["#1f5fa8", "#4a8fd8", "#8dbbea", "#0b3b70"], gguf: "#e8891c", raw: "#8c8c8c" };

interface Bar { label: string; kind: string; color: string; decode?: Spread; prefill?: Spread; skipped?: string }

function chartGroups(run: BenchRun): { name: string; bars: Bar[] }[] {
  const groups = new Map<string, Bar[]>();
  const mlxIndex = new Map<string, number>();
  for (const e of run.entries) {
    const bars = groups.get(e.group) ?? [];
    groups.set(e.group, bars);
    const i = mlxIndex.get(e.group) ?? 0;
    if (e.backend === "mlx") mlxIndex.set(e.group, i + 1);
    const color = e.backend === "mlx" ? COLORS.mlx[i % COLORS.mlx.length] : e.backend === "raw" ? COLORS.raw : COLORS.gguf;
    const s = e.summary;
    bars.push({ label: e.variant.replace("float", "f"), kind: { mlx: "MLX", gguf: "GGUF", raw: "raw" }[e.backend], color, decode: s?.decodeTps, prefill: s?.prefillTps, ...(e.status !== "ok" || !s?.decodeTps ? { skipped: e.status } : {}) });
  }
  return [...groups].map(([name, bars]) => ({ name, bars }));
}

function barPanel(out: string[], title: string, top: number, width: number, groups: { name: string; bars: Bar[] }[], key: "decode" | "prefill"): number {
  const height = 250;
  const [left, plotTop, plotH] = [70, top + 30, height - 95];
  const values = groups.flatMap((g) => g.bars.flatMap((b) => (b[key] ? [b[key]!.min, b[key]!.max] : []))).filter((v) => v > 0);
  const lo = Math.floor(Math.log10(Math.min(...values, 1)));
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(Math.max(...values, 10))));
  const y = (v: number) => plotTop + plotH - ((Math.log10(v) - lo) / (hi - lo)) * plotH;
  out.push(txt(left, top + 16, title, 'font-size="15" font-weight="bold"'));
  for (let d = lo; d <= hi; d++) {
    out.push(line(left, y(10 ** d), width - 20, y(10 ** d), 'stroke="#ddd"'), txt(left - 6, y(10 ** d) + 4, sig(10 ** d), 'font-size="11" text-anchor="end"'));
  }
  const slots = groups.reduce((n, g) => n + g.bars.length, 0) + 1.2 * Math.max(0, groups.length - 1);
  const slot = Math.min(90, (width - 20 - left - 10) / Math.max(1, slots));
  let x = left + 10 + Math.max(0, (width - 20 - left - 10 - slot * slots) / 2);
  for (const g of groups) {
    const start = x;
    for (const b of g.bars) {
      const s = b[key];
      const bx = x + slot * 0.12;
      const bw = slot * 0.76;
      if (s && s.median > 0) {
        out.push(rect(bx, y(s.median), bw, plotTop + plotH - y(s.median), `fill="${b.color}"`));
        if (s.n > 1) out.push(line(bx + bw / 2, y(s.min), bx + bw / 2, y(s.max), 'stroke="#222" stroke-width="1.2"'));
        out.push(txt(bx + bw / 2, Math.min(y(s.max), y(s.median)) - 4, sig(s.median), 'font-size="10" text-anchor="middle"'));
      } else {
        out.push(rect(bx, plotTop + plotH - 18, bw, 18, `fill="none" stroke="${b.color}" stroke-dasharray="3,2"`),
          txt(bx + bw / 2, plotTop + plotH - 22, b.skipped ?? "n/a", 'font-size="9" text-anchor="middle" fill="#a00"'));
      }
      out.push(txt(bx + bw / 2, plotTop + plotH + 13, b.label, 'font-size="10" text-anchor="middle"'),
        txt(bx + bw / 2, plotTop + plotH + 24, b.kind, 'font-size="9" text-anchor="middle" fill="#555"'));
      x += slot;
    }
    out.push(txt((start + x) / 2, plotTop + plotH + 40, g.name, 'font-size="12" font-weight="bold" text-anchor="middle"'));
    x += slot * 1.2;
  }
  out.push(line(left, plotTop + plotH, width - 20, plotTop + plotH, 'stroke="#444"'));
  out.push(txt(14, plotTop + plotH / 2, "tokens/s (log)", `font-size="11" transform="rotate(-90 14 ${plotTop + plotH / 2})" text-anchor="middle"`));
  return top + height;
}

interface RatioRow { label: string; value: number; color: string }

function ratioPanel(out: string[], title: string, x0: number, top: number, w: number, rows: RatioRow[], goal: number | undefined, goalLabel: string, fmt: (v: number) => string, minScale: number, note?: string): number {
  const [labelW, rowH] = [130, 17];
  out.push(txt(x0, top + 14, title, 'font-size="13" font-weight="bold"'));
  if (!rows.length) {
    out.push(txt(x0, top + 34, "no data in this run", 'font-size="11" fill="#777"'));
    return top + 40;
  }
  const max = Math.max(minScale, (goal ?? 0) * 1.3, ...rows.map((r) => r.value * 1.15).filter(Number.isFinite));
  const px = (v: number) => x0 + labelW + (Math.max(0, v) / max) * (w - labelW - 50);
  const plotTop = top + 24;
  rows.forEach((r, i) => {
    const y = plotTop + i * rowH;
    out.push(txt(x0 + labelW - 6, y + 12, r.label, 'font-size="10" text-anchor="end"'), rect(px(0), y + 2, px(r.value) - px(0), rowH - 5, `fill="${r.color}"`),
      txt(px(r.value) + 4, y + 12, fmt(r.value), 'font-size="10"'));
  });
  const bottom = plotTop + rows.length * rowH;
  out.push(line(px(0), plotTop, px(0), bottom, 'stroke="#444"'));
  if (goal !== undefined) out.push(line(px(goal), plotTop - 4, px(goal), bottom, 'stroke="#c00" stroke-dasharray="4,3"'));
  out.push(txt(goal !== undefined ? px(goal) : px(0), bottom + 12, goalLabel, `font-size="10" fill="${goal !== undefined ? "#c00" : "#555"}" text-anchor="${goal !== undefined ? "middle" : "start"}"`));
  if (note) out.push(txt(x0, bottom + 26, note, 'font-size="10" fill="#555"'));
  return bottom + (note ? 32 : 18);
}

/** The chart as an SVG document. */
export function toSvg(run: BenchRun): string {
  const width = 1240;
  const body: string[] = [];
  const groups = chartGroups(run);
  body.push(txt(20, 28, `mlx-node bench ${run.date}${run.quick ? " (quick)" : ""}: decode and prefill speed per model × backend`, 'font-size="18" font-weight="bold"'));
  body.push(txt(20, 48, `${run.machine.cpu} × ${run.machine.cores}, memory read ${sig(run.bandwidth.bestReadGBs)} GB/s. Bars: median; whiskers: min–max; dashed: not measured (see report).`, 'font-size="12" fill="#444"'));
  const legend: [string, string][] = [["MLX (shades per weight type)", COLORS.mlx[0]], ["GgufBackend", COLORS.gguf], ["raw node-llama-cpp", COLORS.raw]];
  const legendX = [20, 230, 340];
  legend.forEach(([label, color], i) => body.push(rect(legendX[i], 58, 12, 12, `fill="${color}"`), txt(legendX[i] + 16, 68, label, 'font-size="11"')));
  let y = barPanel(body, "Decode tokens/s (128 tokens unless cut by the budget)", 76, width, groups, "decode");
  y = barPanel(body, "Prefill tokens/s (512-token prompt unless cut or the context is smaller)", y + 5, width, groups, "prefill");
  const col = (width - 40) / 3;
  const ok = run.entries.filter((e) => e.status === "ok");
  const gg = run.ggufVsRaw && !("error" in run.ggufVsRaw)
    ? run.ggufVsRaw.rows.map((r) => ({ label: `${basename(r.model, ".gguf")} ${r.threads} thr`, value: r.ratio?.median ?? Number.NaN, color: COLORS.gguf }))
    : [];
  const bound = ok.filter((e) => e.summary?.decodeVsBound !== undefined && Number.isFinite(e.summary.decodeVsBound))
    .map((e) => ({ label: `${e.group} ${{ mlx: "MLX", gguf: "GGUF", raw: "raw" }[e.backend]} ${e.variant}`, value: e.summary!.decodeVsBound!, color: e.backend === "mlx" ? COLORS.mlx[0] : e.backend === "raw" ? COLORS.raw : COLORS.gguf }));
  const outside = ok.filter((e) => e.summary?.engine).map((e) => ({ label: `${e.group} ${e.variant}`, value: e.summary!.engine!.outsideShare, color: COLORS.mlx[1] }));
  const shorten = (rows: RatioRow[]) => rows.map((r) => ({ ...r, label: r.label.replace("stories260K", "stories").replace("smollm2-135m", "smollm2").replace("qwen2.5-0.5b", "qwen0.5b") }));
  const bottoms = [
    ratioPanel(body, "GgufBackend ÷ raw node-llama-cpp", 20, y + 10, col, shorten(gg), GGUF_VS_RAW_GOAL, `goal ${GGUF_VS_RAW_GOAL}`, (v) => v.toFixed(2), 1.1,
      "CPU time per decoded token, same threads (bench/gguf.ts)"),
    ratioPanel(body, "Decode ÷ memory-bandwidth bound", 20 + col, y + 10, col, shorten(bound), undefined, "100% = bandwidth / weight bytes per token", (v) => pct(v), 0.1),
    ratioPanel(body, "MLX: time outside evaluation", 20 + 2 * col, y + 10, col, shorten(outside), 0.05, "goal 5%", (v) => pct(v), 0.1),
  ];
  const height = Math.max(...bottoms) + 10;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Arial, sans-serif">\n` +
    `<rect width="100%" height="100%" fill="#fff"/>\n${body.join("\n")}\n</svg>\n`;
}
