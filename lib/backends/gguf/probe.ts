/**
 * The second line of defence for GGUF files: before a file is loaded in this process for the
 * first time, a child process loads it with the same llama.cpp, creates a small context and
 * evaluates one token. A `GGML_ASSERT` abort, a fatal error, a hang or runaway memory then ends
 * the child, not the host, and becomes a ModelFormatError. node-llama-cpp tries its binaries the
 * same way (`testBindingBinary`). The static checks (lib/gguf/validate.ts) reject most bad files before
 * this; the probe catches what only llama.cpp's own code can reveal.
 *
 * Cost: a second load of the file, in a child process that stays up for 5 s after its last probe
 * (loads that follow each other share it). Starting it (Node, node-llama-cpp's binding load, which
 * itself tests the binary in a further child) is the expensive part; a probe in a running child
 * costs little more than the load itself. It is paid once per
 * file identity (absolute path, size, modification time, inode): the result is kept in memory and,
 * best effort, as an empty marker file under `$MLX_NODE_CACHE_DIR` (default
 * `$XDG_CACHE_HOME/mlx-node` or `~/.cache/mlx-node`), so later processes skip it. Only survival is
 * recorded; a file that failed is probed again next time.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { BackendUnavailableError, ModelFormatError } from "../../errors.js";

/** Identity of a file: a changed file (size, mtime or inode) is probed again. */
export interface FileIdentity {
  size: number;
  mtimeMs: number;
  ino: number;
  dev: number;
}

/** Probe options. */
export interface ProbeOptions {
  /**
   * Kill the child after this many milliseconds. Defaults to 60 s plus 60 s per GiB of file: generous,
   * because a slow disk must not make a good file fail, and a runaway load hits the memory limit first.
   */
  timeoutMs?: number;
  /** Kill the child when its resident memory grows by more than this many bytes during the load. Defaults to 512 MiB plus twice the file size. */
  memoryLimitBytes?: number;
  /** Stops waiting (the probe itself finishes, for whoever else waits on the same file). */
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
    const { signal: _signal, ...limits } = options; // one caller's abort must not fail the others' probe
    probe = probeOnce(key, file, identity.size, shownPath, limits);
    passed.set(key, probe);
    probe.catch(() => passed.delete(key)); // a failed probe is tried again next time
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

async function probeOnce(key: string, file: string, size: number, shownPath: string, options: Omit<ProbeOptions, "signal">): Promise<void> {
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
 * The probe server's program (CommonJS, read from stdin: no --input-type flag, which
 * node-llama-cpp's own binary test would inherit and choke on). It starts llama.cpp once, says
 * `{ ready }`, then for each `{ id, file, extraBytes }` loads the file, creates a small context,
 * evaluates one token, frees it all and answers `{ id, error?, logs }`, or dies trying.
 */
const SERVER = `(async () => {
const lib = await import(process.argv[2]);
let logs = [];
const llama = await lib.getLlama({ gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false,
  maxThreads: 0, logLevel: lib.LlamaLogLevel.warn,
  logger: (level, message) => { if ((level === "error" || level === "fatal") && logs.length < 8 && message.trim()) logs.push(message.trim()); } });
let limit = Infinity;
setInterval(() => {
  const rss = process.memoryUsage.rss();
  if (rss > limit) process.send({ memory: rss }, () => process.exit(3));
}, 10).unref();
process.on("message", async ({ id, file, extraBytes }) => {
  logs = [];
  limit = process.memoryUsage.rss() + extraBytes;
  let error, model, context;
  try {
    model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
    context = await model.createContext({ contextSize: 256, threads: 1, sequences: 1, failedCreationRemedy: false });
    const token = model.tokens.bos ?? model.tokens.eos ?? 0;
    await context.getSequence().evaluateWithoutGeneratingNewTokens([token]);
  } catch (e) {
    error = String((e && e.message) || e);
    await new Promise((r) => setTimeout(r, 50)); // llama.cpp's log lines arrive through a queue, after the rejection
  }
  try { await context?.dispose(); await model?.dispose(); } catch {}
  limit = Infinity;
  process.send({ id, error, logs });
});
process.send({ ready: true });
})();
`;

/** How long an idle probe server lives: loads that follow each other reuse it. */
const IDLE_MS = 5_000;

type Reply = { id?: number; error?: string; logs?: string[]; memory?: number; ready?: boolean };

/**
 * One long-lived child that probes files one at a time: llama.cpp's start-up (with
 * node-llama-cpp's own binary test) is paid once per burst of loads, not per file. A file that
 * crashes it or hangs it takes only this child down; the next probe starts a new one.
 */
class ProbeServer {
  private child: ChildProcess | undefined;
  private ready: Promise<void> | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private nextId = 0;
  private idle: NodeJS.Timeout | undefined;
  private stderr = "";
  private onReply: ((m: Reply) => void) | undefined;
  private onExit: ((code: number | null, signal: NodeJS.Signals | null) => void) | undefined;

  probe(file: string, size: number, shownPath: string, options: Omit<ProbeOptions, "signal">): Promise<void> {
    const run = this.queue.then(() => this.run(file, size, shownPath, options));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private start(): Promise<void> {
    const lib = pathToFileURL(llamaLibPath()).href;
    // The program arrives on stdin, so it works the same from dist/ and from the TypeScript sources under test.
    const child = spawn(process.execPath, ["-", lib], { stdio: ["pipe", "ignore", "pipe", "ipc"] });
    child.stdin?.end(SERVER);
    this.child = child;
    this.stderr = "";
    child.stderr?.on("data", (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString("utf8")).slice(-4096);
    });
    child.on("message", (m: Reply) => this.onReply?.(m));
    child.on("exit", (code, signal) => {
      if (this.child === child) {
        this.child = undefined;
        this.ready = undefined;
      }
      this.onExit?.(code, signal);
    });
    return new Promise<void>((resolve, reject) => {
      this.onReply = (m) => (m.ready ? resolve() : undefined);
      this.onExit = (code, signal) =>
        reject(new BackendUnavailableError("gguf", `the GGUF load probe could not start llama.cpp (${signal ?? `exit code ${code}`}): ${lastLines(this.stderr)}`));
      child.on("error", (error) => reject(new BackendUnavailableError("gguf", `the GGUF load probe could not start: ${error.message}`)));
    });
  }

  private async run(file: string, size: number, shownPath: string, options: Omit<ProbeOptions, "signal">): Promise<void> {
    clearTimeout(this.idle);
    this.ready ??= this.start();
    const child = this.child!;
    child.ref();
    child.channel?.ref();
    await this.ready;
    const timeoutMs = options.timeoutMs ?? 60_000 + Math.ceil((size / 2 ** 30) * 60_000);
    const extraBytes = options.memoryLimitBytes ?? 512 * 2 ** 20 + 2 * size;
    const id = ++this.nextId;
    try {
      await new Promise<void>((resolve, reject) => {
        let killedFor: string | undefined;
        let memory = false;
        const kill = (why: string) => {
          killedFor ??= why;
          child.kill("SIGKILL");
        };
        const timer = setTimeout(
          () => kill(`did not finish loading within ${(timeoutMs / 1000).toFixed(0)} s (for a trusted file on a slow disk, MLX_NODE_GGUF_PROBE=0 skips this check)`),
          timeoutMs,
        );
        const done = () => {
          clearTimeout(timer);
          this.onReply = undefined;
          this.onExit = undefined;
        };
        this.onReply = (m) => {
          if (m.memory !== undefined) memory = true;
          if (m.id !== id) return;
          done();
          if (m.error === undefined) resolve();
          else reject(new GgufLoadRefused([...(m.logs ?? []), m.error]));
        };
        this.onExit = (code, signal) => {
          done();
          const why = killedFor
            ?? (memory ? `used more than ${(extraBytes / 2 ** 20).toFixed(0)} MiB while loading`
            : signal ? `crashed llama.cpp (${signal})` : `crashed llama.cpp (exit code ${code})`);
          const detail = lastLines(this.stderr);
          reject(new ModelFormatError(`Cannot load GGUF model ${shownPath}: the file ${why}${detail ? `: ${detail}` : ""}`));
        };
        child.send({ id, file, extraBytes });
      });
    } finally {
      if (this.child === child) {
        child.unref(); // an idle probe server never keeps the host process alive
        child.channel?.unref();
        this.idle = setTimeout(() => child.kill(), IDLE_MS);
        this.idle.unref();
      }
    }
  }
}

const server = new ProbeServer();

function runProbe(file: string, size: number, shownPath: string, options: Omit<ProbeOptions, "signal">): Promise<void> {
  return server.probe(file, size, shownPath, options);
}

function lastLines(text: string): string {
  const lines = text.split("\n").map((l) => l.trim()).filter((l) => l.length > 0);
  return lines.slice(-3).join(" | ").slice(0, 600);
}
