/**
 * The second line of defence for GGUF files: before a file is loaded in this process for the
 * first time, a child process loads it with the same llama.cpp, creates a small context and
 * evaluates one token. A `GGML_ASSERT` abort, a fatal error, a hang or runaway memory then ends
 * the child, not the host, and becomes a ModelFormatError. node-llama-cpp tries its binaries the
 * same way (`testBindingBinary`). The static checks (`validate.ts`) reject most bad files before
 * this; the probe catches what only llama.cpp's own code can reveal.
 *
 * Cost: one Node start, node-llama-cpp's binding load (which itself tests the binary in a second
 * child) and the model load: about 1 s for stories260K on a 2-core machine. It is paid once per
 * file identity (absolute path, size, modification time, inode): the result is kept in memory and,
 * best effort, as an empty marker file under `$MLX_NODE_CACHE_DIR` (default
 * `$XDG_CACHE_HOME/mlx-node` or `~/.cache/mlx-node`), so later processes skip it. Only survival is
 * recorded; a file that failed is probed again next time.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { ModelFormatError } from "../errors.js";

/** Identity of a file: a changed file (size, mtime or inode) is probed again. */
export interface FileIdentity {
  size: number;
  mtimeMs: number;
  ino: number;
  dev: number;
}

/** Probe options. */
export interface ProbeOptions {
  /** Kill the child after this many milliseconds. Defaults to 15 s plus 10 s per GiB of file. */
  timeoutMs?: number;
  /** Kill the child when its resident memory exceeds this many bytes. Defaults to 512 MiB plus twice the file size. */
  memoryLimitBytes?: number;
  signal?: AbortSignal;
}

const passed = new Map<string, Promise<void>>();

/** Whether probing is on: `MLX_NODE_GGUF_PROBE=0` turns it off (for callers who trust their files). */
export function probeEnabled(): boolean {
  return process.env.MLX_NODE_GGUF_PROBE !== "0";
}

/**
 * llama.cpp refused the file in the child with an ordinary error (wrong shape, wrong key type...):
 * the host then reports that error without loading the file itself, so a rejected file costs the
 * host nothing. `messages` are llama.cpp's error log lines, then the thrown message.
 */
export class GgufLoadRefused extends Error {
  constructor(readonly messages: string[]) {
    super(messages[messages.length - 1] ?? "llama.cpp refused the file");
  }
}

/**
 * Loads `file` in a child process once per file identity; resolves when llama.cpp loaded it and
 * evaluated a token.
 * @throws GgufLoadRefused when llama.cpp refused the file with an ordinary error
 * @throws ModelFormatError when the child crashed, hung or ran out of its memory limit
 */
export function probeGguf(file: string, identity: FileIdentity, shownPath: string, options: ProbeOptions = {}): Promise<void> {
  const key = `${file}\0${identity.size}\0${identity.mtimeMs}\0${identity.ino}\0${identity.dev}`;
  let probe = passed.get(key);
  if (!probe) {
    probe = probeOnce(key, file, identity.size, shownPath, options);
    passed.set(key, probe);
    probe.catch(() => passed.delete(key)); // a failed or aborted probe is tried again next time
  }
  return options.signal ? raceAbort(probe, options.signal) : probe;
}

function raceAbort(promise: Promise<void>, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted();
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** node-llama-cpp's entry file: the child imports it, and its package version keys the disk cache. */
function llamaLibPath(): string {
  return createRequire(import.meta.url).resolve("node-llama-cpp");
}

/** The marker file recording that `key` survived the probe with this node-llama-cpp, or undefined without a cache directory. */
async function markerPath(key: string): Promise<string | undefined> {
  const home = homedir();
  const base = process.env.MLX_NODE_CACHE_DIR
    ?? (process.env.XDG_CACHE_HOME ? join(process.env.XDG_CACHE_HOME, "mlx-node") : home ? join(home, ".cache", "mlx-node") : undefined);
  if (!base) return undefined;
  const pkg = await readFile(join(dirname(llamaLibPath()), "..", "package.json"), "utf8").catch(() => undefined);
  const version = pkg === undefined ? undefined : (JSON.parse(pkg) as { version?: unknown }).version;
  if (typeof version !== "string") return undefined;
  return join(base, "gguf-probe", createHash("sha256").update(`1\0${version}\0${key}`).digest("hex"));
}

async function probeOnce(key: string, file: string, size: number, shownPath: string, options: ProbeOptions): Promise<void> {
  const marker = await markerPath(key);
  if (marker && (await stat(marker).catch(() => undefined))) return;
  await runProbe(file, size, shownPath, options);
  if (marker) {
    await mkdir(join(marker, ".."), { recursive: true })
      .then(() => writeFile(marker, ""))
      .catch(() => undefined); // best effort: an unwritable cache only costs the next process a probe
  }
}

/**
 * The child's program (CommonJS, read from stdin: no --input-type flag, which node-llama-cpp's own
 * binary test would inherit and choke on). It reports `{ survived }` over IPC, or dies trying.
 */
const CHILD = `(async () => {
const [libUrl, file, limit] = process.argv.slice(2);
const errors = [];
setInterval(() => {
  if (process.memoryUsage.rss() > Number(limit)) { process.send({ memory: process.memoryUsage.rss() }, () => process.exit(3)); }
}, 10).unref();
const lib = await import(libUrl);
const llama = await lib.getLlama({ gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false,
  maxThreads: 0, logLevel: lib.LlamaLogLevel.error, logger: (level, message) => { if (errors.length < 8 && message.trim()) errors.push(message.trim()); } });
let error;
try {
  const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  const context = await model.createContext({ contextSize: 256, threads: 1, sequences: 1, failedCreationRemedy: false });
  const token = model.tokens.bos ?? model.tokens.eos ?? 0;
  await context.getSequence().evaluateWithoutGeneratingNewTokens([token]);
} catch (e) { error = String(e && e.message || e); }
process.send({ survived: true, error, logs: errors }, () => process.exit(0));
})();
`;

let libUrl: string | undefined;

function runProbe(file: string, size: number, shownPath: string, options: ProbeOptions): Promise<void> {
  libUrl ??= pathToFileURL(llamaLibPath()).href;
  const timeoutMs = options.timeoutMs ?? 15_000 + Math.ceil((size / 2 ** 30) * 10_000);
  const memoryLimit = options.memoryLimitBytes ?? 512 * 2 ** 20 + 2 * size;
  return new Promise((resolve, reject) => {
    // The program arrives on stdin, so it works the same from dist/ and from the TypeScript sources
    // under test (not with -e: node-llama-cpp forks its own binary test with our execArgv).
    const child = spawn(process.execPath, ["-", libUrl!, file, String(memoryLimit)], {
      stdio: ["pipe", "ignore", "pipe", "ipc"],
    });
    child.stdin?.end(CHILD);
    let stderr = "";
    let report: { survived?: boolean; error?: string; logs?: string[]; memory?: number } | undefined;
    let killedFor: string | undefined;
    child.stderr?.on("data", (chunk: Buffer) => {
      if (stderr.length < 4096) stderr += chunk.toString("utf8");
    });
    child.on("message", (m) => (report = m as typeof report));
    const kill = (why: string) => {
      killedFor ??= why;
      child.kill("SIGKILL");
    };
    const timer = setTimeout(() => kill(`did not finish loading within ${(timeoutMs / 1000).toFixed(0)} s`), timeoutMs);
    const onAbort = () => kill("aborted");
    options.signal?.addEventListener("abort", onAbort, { once: true });
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(new ModelFormatError(`Cannot check GGUF model ${shownPath} in a child process: ${error.message}`, { cause: error }));
    });
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      if (killedFor === "aborted") return reject(options.signal?.reason);
      if (report?.survived && code === 0) {
        return report.error === undefined ? resolve() : reject(new GgufLoadRefused([...(report.logs ?? []), report.error]));
      }
      const why = killedFor
        ?? (report?.memory !== undefined ? `used more than ${(memoryLimit / 2 ** 20).toFixed(0)} MiB while loading`
        : signal ? `crashed llama.cpp (${signal})` : `crashed llama.cpp (exit code ${code})`);
      const detail = lastLines(stderr);
      reject(new ModelFormatError(`Cannot load GGUF model ${shownPath}: the file ${why}${detail ? `: ${detail}` : ""}`));
    });
  });
}

function lastLines(text: string): string {
  const lines = text.split("\n").map((l) => l.trim()).filter((l) => l.length > 0);
  return lines.slice(-3).join(" | ").slice(0, 600);
}
