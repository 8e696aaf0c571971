/**
 * Measurement building blocks of `npm run bench`: statistics (median and spread), process RSS
 * sampling, the sample protocol (one prefill request, one decode request) and the worker process
 * that holds one model for the whole run. Every model lives in its own worker, so its peak RSS is
 * its own, a crash or a hang costs one entry, and the runner can interleave models cheaply.
 *
 * Definitions (as a caller of `generateStream` sees them; same code for every backend):
 * - TTFT: from the `generateStream` call to the first chunk carrying a token, for a prompt of
 *   `prefillTokens` tokens whose first token only is in the KV cache (the second token changes
 *   every sample, so the engine evaluates `prefillTokens - 1` tokens).
 * - prefill tokens/s: evaluated prompt tokens (`usage.evaluatedPromptTokens`) / TTFT.
 * - decode tokens/s: greedy, `ignoreEos: true`, `decodeTokens` tokens; tokens after the first
 *   chunk / time from the first chunk to the last.
 * - peak RSS: the process's `rss`, sampled every 10 ms during the sample (the kernel's own
 *   high-water mark, VmHWM, is reported per worker too).
 */
import { readFileSync, statSync } from "node:fs";
import type { LlamaContextSequence, LlamaModel, Token } from "node-llama-cpp";
import type { InferenceBackend } from "../lib/backend.js";
import { mlxSampleHooks, type MlxSampleEngine } from "./mlx.js";
import { median, summarize, type Spread } from "./stats.js";

export { median, summarize, type Spread };

/** Samples the process RSS on a timer; engines run off the main thread, so the timer keeps firing. */
export class RssSampler {
  private peak = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(intervalMs = 10) {
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.timer.unref();
  }

  sample(): number {
    const rss = process.memoryUsage.rss();
    if (rss > this.peak) this.peak = rss;
    return rss;
  }

  /** The peak since the previous call (or since construction), then starts a new window. */
  takePeak(): number {
    this.sample();
    const peak = this.peak;
    this.peak = 0;
    this.sample();
    return peak;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** VmHWM (the kernel's peak RSS of this process) and VmRSS in bytes, on Linux. */
export function procMemory(): { vmHwmBytes?: number; vmRssBytes?: number } {
  try {
    const status = readFileSync("/proc/self/status", "utf8");
    const kb = (key: string) => {
      const m = status.match(new RegExp(`^${key}:\\s+(\\d+) kB`, "m"));
      return m ? Number(m[1]) * 1024 : undefined;
    };
    return { vmHwmBytes: kb("VmHWM"), vmRssBytes: kb("VmRSS") };
  } catch {
    return {};
  }
}

/** What one sample measures. */
export interface SampleRequest {
  prefillTokens: number;
  decodeTokens: number;
  /** Unload and load the model first, timing the (warm) load. */
  reload: boolean;
  /** Picks the prompt's second token, so consecutive prefill prompts differ after the first token. */
  variant: number;
  /** Send progress messages (probes only: they cost an IPC message each). */
  progress?: boolean;
}

export interface SampleResult {
  loadMs?: number;
  promptTokens: number;
  evaluatedPromptTokens: number;
  ttftMs: number;
  prefillTps: number;
  generatedTokens: number;
  decodeTps: number;
  /** Wall time per token after the first, as the caller sees the stream. */
  callerMsPerToken: number;
  rssPeakBytes: number;
  mlx?: MlxSampleEngine;
}

/** Partial progress of a sample, sent while it runs so a sample killed for time still says how fast it went. */
export interface SampleProgress {
  phase: "prefill" | "decode";
  tokens: number;
  ms: number;
}

interface Prompts {
  decode: number[];
  prefill(tokens: number, variant: number): number[];
}

function buildPrompts(tokenize: (text: string, special: boolean) => number[]): Prompts {
  const decode = tokenize("Once upon a time", true);
  const filler = tokenize(" Once upon a time, there was a little girl named Lily. She loved to play outside in the park.", false);
  const second = filler.filter((t) => t !== decode[1]);
  return {
    decode,
    prefill(tokens, variant) {
      const ids = [decode[0], second[variant % second.length]];
      while (ids.length < tokens) ids.push(...filler);
      return ids.slice(0, tokens);
    },
  };
}

/** The prompt and decode lengths that fit a context of `contextSize` tokens. */
export function fitCounts(prefillTokens: number, decodeTokens: number, contextSize: number): { prefillTokens: number; decodeTokens: number } {
  return { prefillTokens: Math.max(2, Math.min(prefillTokens, contextSize - 2)), decodeTokens: Math.max(2, Math.min(decodeTokens, contextSize - 16)) };
}

/** Times a token stream: tokens after the first chunk / time from the first chunk to the last. */
class DecodeClock {
  first = 0;
  last = 0;
  afterFirst = 0;
  private lastReport = 0;
  constructor(private readonly report?: (p: SampleProgress) => void) {}
  tokens(n: number): void {
    this.last = performance.now();
    if (this.first) this.afterFirst += n;
    else this.first = this.last;
    if (this.report && this.last - this.lastReport > 250) {
      this.lastReport = this.last;
      this.report({ phase: "decode", tokens: this.afterFirst, ms: this.last - this.first });
    }
  }
  get msPerToken(): number {
    return this.afterFirst > 0 ? (this.last - this.first) / this.afterFirst : Number.NaN;
  }
}

/** One worker's model: an mlx-node backend or raw node-llama-cpp. */
interface Subject {
  load(): Promise<number>;
  unload(): Promise<void>;
  sample(req: SampleRequest, rss: RssSampler, report?: (p: SampleProgress) => void): Promise<SampleResult>;
  ready(loadMs: number): Promise<WorkerReady>;
}

async function backendSubject(spec: WorkerSpec): Promise<Subject> {
  const { MlxBackend } = await import("../lib/backends/mlx.js");
  const { GgufBackend } = await import("../lib/backends/gguf.js");
  const backend: InferenceBackend = spec.kind === "mlx" ? new MlxBackend() : new GgufBackend();
  let prompts: Prompts | undefined;
  return {
    load: () => timed(() => backend.load(spec.path)),
    unload: () => backend.unload(),
    async ready(loadMs) {
      const mlx = backend instanceof MlxBackend ? backend : undefined;
      return {
        type: "ready", loadMs, contextSize: backend.contextSize, threads: backend.threadCount,
        weightBytes: mlx ? mlx.info?.weightBytes ?? 0 : statSync(spec.path).size, rssAfterLoadBytes: process.memoryUsage.rss(),
        ...(mlx ? { info: mlx.info, runtime: await MlxBackend.runtimeInfo(), mlxActiveAfterLoadBytes: (await MlxBackend.memory()).activeBytes } : {}),
      };
    },
    async sample(req, rss, report) {
      prompts ??= buildPrompts((text, special) => backend.tokenize(text, { addSpecialTokens: special }));
      const hooks = backend.name === "mlx" ? mlxSampleHooks(backend) : undefined;
      await hooks?.before();
      rss.takePeak();
      const prompt = prompts.prefill(fitCounts(req.prefillTokens, 1, backend.contextSize).prefillTokens, req.variant);
      const start = performance.now();
      const pre = backend.generateStream(prompt, { maxTokens: 1, temperature: 0, ignoreEos: true });
      let ttftMs = 0;
      for await (const chunk of pre) if (chunk.tokens.length && !ttftMs) ttftMs = performance.now() - start;
      const evaluated = (await pre.result).usage.evaluatedPromptTokens;
      report?.({ phase: "prefill", tokens: evaluated, ms: ttftMs });
      hooks?.afterPrefill();

      const { decodeTokens } = fitCounts(2, req.decodeTokens, backend.contextSize - prompts.decode.length);
      const clock = new DecodeClock(report);
      const dec = backend.generateStream(prompts.decode, { maxTokens: decodeTokens, temperature: 0, ignoreEos: true });
      for await (const chunk of dec) if (chunk.tokens.length) clock.tokens(chunk.tokens.length);
      const generated = (await dec.result).usage.completionTokens;
      const result: SampleResult = {
        promptTokens: prompt.length, evaluatedPromptTokens: evaluated, ttftMs, prefillTps: (evaluated / ttftMs) * 1000,
        generatedTokens: generated, decodeTps: 1000 / clock.msPerToken, callerMsPerToken: clock.msPerToken, rssPeakBytes: rss.takePeak(),
      };
      if (hooks) result.mlx = await hooks.after(clock.msPerToken);
      return result;
    },
  };
}

/**
 * Raw node-llama-cpp, the GGUF baseline: the same file, context size and thread count as
 * GgufBackend would use, the same prompts and cache state (first prompt token cached), timed the same way.
 */
async function rawSubject(spec: WorkerSpec): Promise<Subject> {
  const lib = await import("node-llama-cpp");
  let llama: Awaited<ReturnType<typeof lib.getLlama>> | undefined;
  let model: LlamaModel | undefined;
  let sequence: LlamaContextSequence | undefined;
  let prompts: Prompts | undefined;
  const threads = spec.threads ?? 1;
  const keepFirst = async (tokens: number[]) => {
    await sequence!.clearHistory();
    await sequence!.evaluateWithoutGeneratingNewTokens(tokens.slice(0, 1) as Token[]);
  };
  return {
    load: () => timed(async () => {
      llama ??= await lib.getLlama({ gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false, maxThreads: 0, logLevel: lib.LlamaLogLevel.error });
      model = await llama.loadModel({ modelPath: spec.path, gpuLayers: 0 });
      const contextSize = Math.min(model.trainContextSize > 0 ? model.trainContextSize : 4096, 4096);
      sequence = (await model.createContext({ contextSize, threads, sequences: 1 })).getSequence();
    }),
    async unload() {
      await sequence?.context.dispose();
      await model?.dispose();
      sequence = undefined;
      model = undefined;
    },
    async ready(loadMs) {
      return { type: "ready", loadMs, contextSize: sequence!.contextSize, threads: sequence!.context.currentThreads, weightBytes: statSync(spec.path).size, rssAfterLoadBytes: process.memoryUsage.rss() };
    },
    async sample(req, rss, report) {
      const m = model!;
      const seq = sequence!;
      prompts ??= buildPrompts((text, special) => {
        const ids: number[] = Array.from(m.tokenize(text, true));
        const bos = m.tokens.bos;
        if (special && m.tokens.shouldPrependBosToken && bos !== null && ids[0] !== bos) ids.unshift(bos);
        return ids;
      });
      rss.takePeak();
      const prompt = prompts.prefill(fitCounts(req.prefillTokens, 1, seq.contextSize).prefillTokens, req.variant);
      await keepFirst(prompt);
      const start = performance.now();
      const pre = seq.evaluate(prompt.slice(1) as Token[], { temperature: 0 });
      await pre.next();
      const ttftMs = performance.now() - start;
      await pre.return();
      report?.({ phase: "prefill", tokens: prompt.length - 1, ms: ttftMs });

      const { decodeTokens } = fitCounts(2, req.decodeTokens, seq.contextSize - prompts.decode.length);
      await keepFirst(prompts.decode);
      const clock = new DecodeClock(report);
      let n = 0;
      for await (const _ of seq.evaluate(prompts.decode.slice(1) as Token[], { temperature: 0 })) {
        clock.tokens(1);
        if (++n >= decodeTokens) break;
      }
      return {
        promptTokens: prompt.length, evaluatedPromptTokens: prompt.length - 1, ttftMs, prefillTps: ((prompt.length - 1) / ttftMs) * 1000,
        generatedTokens: n, decodeTps: 1000 / clock.msPerToken, callerMsPerToken: clock.msPerToken, rssPeakBytes: rss.takePeak(),
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The worker process: `node dist/bench/run.js --worker '{"kind":"mlx","path":"..."}'`.

export interface WorkerSpec {
  /** `raw`: node-llama-cpp itself on a GGUF file, with `threads` threads. */
  kind: "mlx" | "gguf" | "raw";
  path: string;
  threads?: number;
}

/** First message of a worker: the model is loaded (or failed to). */
export interface WorkerReady {
  type: "ready";
  loadMs: number;
  contextSize: number;
  threads: number;
  weightBytes: number;
  info?: unknown;
  runtime?: unknown;
  rssAfterLoadBytes: number;
  mlxActiveAfterLoadBytes?: number;
}

export type WorkerCommand =
  | { id: number; cmd: "sample"; req: SampleRequest }
  | { id: number; cmd: "memory" }
  | { id: number; cmd: "exit" };

export type WorkerMessage =
  | WorkerReady
  | { type: "fatal"; error: string }
  | { type: "progress"; id: number; progress: SampleProgress }
  | { type: "reply"; id: number; ok: true; result: unknown }
  | { type: "reply"; id: number; ok: false; error: string };

function send(message: WorkerMessage): void {
  process.send?.(message);
}

async function timed(fn: () => Promise<void>): Promise<number> {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

/** Runs the worker side: loads the model, then answers commands one at a time until `exit`. */
export async function runWorker(spec: WorkerSpec): Promise<void> {
  const rss = new RssSampler();
  let subject: Subject;
  try {
    subject = spec.kind === "raw" ? await rawSubject(spec) : await backendSubject(spec);
    send(await subject.ready(await subject.load()));
  } catch (error) {
    send({ type: "fatal", error: message(error) });
    process.exit(1);
  }
  process.on("disconnect", () => process.exit(0));
  process.on("message", (raw) => {
    const command = raw as WorkerCommand;
    void (async () => {
      try {
        let result: unknown;
        if (command.cmd === "sample") {
          const { req } = command;
          const loadMs = req.reload ? (await subject.unload(), await subject.load()) : undefined;
          const report = req.progress ? (progress: SampleProgress) => send({ type: "progress", id: command.id, progress }) : undefined;
          result = { ...(await subject.sample(req, rss, report)), ...(loadMs !== undefined ? { loadMs } : {}) };
        } else if (command.cmd === "memory") {
          result = { ...procMemory(), rssBytes: process.memoryUsage.rss() };
        } else {
          await subject.unload();
          send({ type: "reply", id: command.id, ok: true, result: procMemory() });
          rss.stop();
          process.disconnect?.();
          return;
        }
        send({ type: "reply", id: command.id, ok: true, result });
      } catch (error) {
        send({ type: "reply", id: command.id, ok: false, error: message(error) });
      }
    })();
  });
}

function message(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
