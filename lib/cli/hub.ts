/**
 * `mlx-node pull | ls | rm`: models in the shared Hugging Face cache, and the download progress
 * that `generate`, `serve` and `eval` show too when they are given a name that is not cached yet.
 */
import { EXIT } from "./exit-codes.js";
import { parseArgs } from "node:util";
import { listCachedModels, removeCachedModel } from "../hub/cache.js";
import { pullModel, type PullProgress } from "../hub/pull.js";
import { InvalidOptionError } from "../errors.js";
import { integerFlag } from "./flags.js";

/** Bytes as people read them (binary units, as `du -h`). */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/**
 * A progress reporter for stderr: a bar redrawn in place on a terminal; otherwise (logs, CI) one
 * plain line per downloaded file, so a log is not flooded. Silent while every file is cached
 * (a cached file's first report is already complete), so `generate` on a cached model prints nothing.
 */
export function progressReporter(stream: Pick<NodeJS.WriteStream, "write" | "isTTY" | "columns"> = process.stderr): (p: PullProgress) => void {
  let lastDraw = 0;
  let downloading = false;
  const seen = new Set<string>();
  const finished = new Set<string>();
  return (p) => {
    const complete = p.fileBytes === p.fileTotal;
    if (!seen.has(p.file)) {
      seen.add(p.file);
      if (complete) finished.add(p.file); // cached: nothing to show
      else downloading = true;
    }
    const fileDone = complete && !finished.has(p.file);
    if (fileDone) finished.add(p.file);
    if (!downloading) return;
    if (stream.isTTY) {
      const now = Date.now();
      const all = p.filesDone === p.filesTotal;
      if (now - lastDraw < 100 && !all) return;
      lastDraw = now;
      const width = Math.max(10, Math.min(40, (stream.columns ?? 80) - 60));
      const ratio = p.total > 0 ? p.bytes / p.total : 1;
      const bar = "#".repeat(Math.round(ratio * width)).padEnd(width, "-");
      stream.write(`\r\x1b[K${p.repo} [${bar}] ${(ratio * 100).toFixed(0).padStart(3)}% ${formatBytes(p.bytes)}/${formatBytes(p.total)} ${p.filesDone}/${p.filesTotal} files`);
      if (all) stream.write("\n");
    } else if (fileDone) {
      stream.write(`${p.repo}: ${p.file} 100% (${formatBytes(p.fileTotal)}); ${formatBytes(p.bytes)} of ${formatBytes(p.total)}\n`);
    }
  };
}

/** `mlx-node pull <name>`: downloads a model into the cache (nothing to do when it is there); prints the path to load. */
export async function runPull(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { concurrency: { type: "string" }, quiet: { type: "boolean", short: "q" } } });
  if (positionals.length !== 1) throw new InvalidOptionError("name", "one model name (owner/name, hf:owner/name/file.gguf, hf:owner/name:QUANT)", positionals.join(" ") || "nothing");
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once("SIGINT", onSigint);
  try {
    const pulled = await pullModel(positionals[0]!, {
      signal: controller.signal,
      concurrency: integerFlag("--concurrency", values.concurrency),
      onProgress: values.quiet ? undefined : progressReporter(),
    });
    const how = pulled.downloadedBytes > 0 ? `downloaded ${formatBytes(pulled.downloadedBytes)}` : pulled.online ? "already cached" : "offline, from the cache";
    process.stderr.write(`${pulled.name} @ ${pulled.commit.slice(0, 8)} (${pulled.format}): ${how}\n`);
    process.stdout.write(`${pulled.path}\n`);
    return EXIT.ok;
  } finally {
    process.off("SIGINT", onSigint);
  }
}

/** `mlx-node ls [--json]`: cached models with revision, format and size on disk. */
export async function runLs(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { json: { type: "boolean" } } });
  const models = await listCachedModels();
  if (values.json) {
    process.stdout.write(`${JSON.stringify(models, null, 2)}\n`);
    return EXIT.ok;
  }
  const rows = [["NAME", "REVISION", "FORMAT", "SIZE"], ...models.map((m) => [m.name, `${m.refs.join(",") || "-"} (${m.commit.slice(0, 8)})`, m.format, formatBytes(m.sizeOnDisk)])];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const row of rows) process.stdout.write(`${row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join("  ")}\n`);
  return EXIT.ok;
}

/** `mlx-node rm <name>`: removes a model repository (all its revisions) from the cache. */
export async function runRm(args: string[]): Promise<number> {
  const { positionals } = parseArgs({ args, allowPositionals: true });
  if (positionals.length === 0) throw new InvalidOptionError("name", "one or more model names", "nothing");
  for (const name of positionals) {
    const freed = await removeCachedModel(name);
    process.stderr.write(`removed ${name} (${formatBytes(freed)})\n`);
  }
  return EXIT.ok;
}
