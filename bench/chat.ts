/**
 * Chat KV-cache reuse: time to first token of a conversation's second turn against its first
 * turn, and against the same second turn answered from a cold cache, on every backend available.
 *
 * Run on its own after `tsc`:  node dist/bench/chat.js [repeats]
 * Or from a bench runner:      const result = await benchChat();
 *
 * Each repeat is a fresh conversation (its system message starts with the repeat number, so no
 * earlier repeat's cache helps): a long system message and a question (turn 1), then turn 1's
 * answer and a follow-up (turn 2, which reuses the cache up to the end of turn 1), then an
 * unrelated request that replaces the cache, then turn 2 again ("cold": every prompt token is
 * evaluated). Greedy, 16 answer tokens per turn. TTFT is measured as a caller sees it
 * (`timings.timeToFirstTokenMs`, rendering and tokenization included).
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { InferenceBackend } from "../lib/backend.js";
import { GgufBackend } from "../lib/backends/gguf.js";
import { MlxBackend, mlxAvailability } from "../lib/backends/mlx.js";
import type { ChatMessage, ChatOptions, ChatResult } from "../lib/chat.js";
import { packageRoot } from "../lib/native.js";
import { median } from "./stats.js";

/** stories260K has no chat template: each message becomes a paragraph. */
const STORY_TEMPLATE =
  "{{ bos_token }}{% for m in messages %}{{ m.content }}{% if not loop.last or m.role == 'assistant' %}\n{% endif %}{% endfor %}";

const SYSTEM =
  "You are a storyteller for small children. Your stories are short and kind. They take place in a small town " +
  "with a park, a river, a bakery and a school. The main characters are Lily, a girl who loves to play outside, " +
  "her brother Tom, who likes to build things, their dog Max, and their grandmother, who bakes bread every " +
  "morning. Every story has a small problem that the children solve together, and ends happily. Use simple " +
  "words, short sentences and a friendly tone. Do not use scary or sad events. Mention the weather, the colors " +
  "of things, and what the characters feel. When asked a question about a story, answer in one or two sentences.";

type ChatBackend = InferenceBackend & { chat(messages: ChatMessage[], options?: ChatOptions): Promise<ChatResult> };

/** Options of {@link benchChat}. */
export interface ChatBenchOptions {
  /** Conversations per case (medians are reported). Defaults to 5. */
  repeats?: number;
  /** Directory of the shared models. Defaults to $MLX_NODE_SHARED_MODELS, else ../shared/models next to the package. */
  modelsDir?: string;
  /** Directory of the synthetic models (bench/synthetic). Defaults to bench/.models in the package. */
  syntheticDir?: string;
}

/** One turn's measurements, medians over the repeats. */
export interface ChatTurnStats {
  ttftMs: number;
  promptTokens: number;
  evaluatedPromptTokens: number;
}

/** One model on one backend. */
export interface ChatBenchCase {
  backend: "mlx" | "gguf";
  model: string;
  turn1: ChatTurnStats;
  turn2: ChatTurnStats;
  turn2Cold: ChatTurnStats;
  /** Median over repeats of turn-2 TTFT ÷ turn-1 TTFT. */
  turn2VsTurn1: number;
  /** Median over repeats of turn-2 TTFT ÷ cold turn-2 TTFT. */
  turn2VsCold: number;
}

/** What {@link benchChat} measured. */
export interface ChatBenchResult {
  repeats: number;
  cases: ChatBenchCase[];
  skipped: string[];
}

interface CaseSpec {
  backend: "mlx" | "gguf";
  model: string;
  path: string;
  template?: string;
}

/** Runs the chat bench on the stories260K models and the SmolLM2-135M synthetic models that exist. */
export async function benchChat(options: ChatBenchOptions = {}): Promise<ChatBenchResult> {
  const repeats = Math.max(1, Math.floor(options.repeats ?? 5));
  const root = packageRoot();
  const models = options.modelsDir ?? process.env.MLX_NODE_SHARED_MODELS ?? resolve(root, "../shared/models");
  const synthetic = options.syntheticDir ?? join(root, "bench/.models");
  const specs: CaseSpec[] = [
    { backend: "mlx", model: "stories260K hf-f32", path: join(models, "stories260K/hf-f32"), template: STORY_TEMPLATE },
    { backend: "gguf", model: "stories260K.gguf", path: join(models, "stories260K/stories260K.gguf"), template: STORY_TEMPLATE },
    { backend: "mlx", model: "smollm2-135m float16 (synthetic)", path: join(synthetic, "smollm2-135m-mlx-float16") },
    { backend: "gguf", model: "smollm2-135m q4_0 (synthetic)", path: join(synthetic, "smollm2-135m-q4_0.gguf") },
  ];
  const skipped: string[] = [];
  const cases: ChatBenchCase[] = [];
  const mlx = mlxAvailability();
  for (const spec of specs) {
    if (!existsSync(spec.path)) {
      skipped.push(`${spec.backend} ${spec.model}: ${spec.path} not found`);
      continue;
    }
    if (spec.backend === "mlx" && !mlx.available) {
      skipped.push(`${spec.backend} ${spec.model}: MLX unavailable (${mlx.reason})`);
      continue;
    }
    try {
      cases.push(await benchCase(spec, repeats));
    } catch (error) {
      skipped.push(`${spec.backend} ${spec.model}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  return { repeats, cases, skipped };
}

async function benchCase(spec: CaseSpec, repeats: number): Promise<ChatBenchCase> {
  const backend: ChatBackend = spec.backend === "mlx" ? new MlxBackend() : new GgufBackend();
  await backend.load(spec.path);
  const turns: { t1: ChatResult; t2: ChatResult; cold: ChatResult }[] = [];
  try {
    const options: ChatOptions = { maxTokens: 16, temperature: 0, ...(spec.template ? { chatTemplate: spec.template } : {}) };
    // Warm-up: first-request costs (template compilation, allocator growth) are not a turn's.
    await backend.chat([{ role: "user", content: "Hello." }], { ...options, maxTokens: 2 });
    for (let r = 0; r < repeats; r++) {
      const first: ChatMessage[] = [
        { role: "system", content: `Story number ${r + 1}. ${SYSTEM}` },
        { role: "user", content: "Tell me a story about Lily, Tom and Max at the river on a sunny day." },
      ];
      const t1 = await backend.chat(first, options);
      const second: ChatMessage[] = [...first, t1.message, { role: "user", content: "What did Max do?" }];
      const t2 = await backend.chat(second, options);
      await backend.generate("Once upon a time there was a cat.", { maxTokens: 1, temperature: 0 }); // replaces the cache
      const cold = await backend.chat(second, options);
      turns.push({ t1, t2, cold });
    }
  } finally {
    await backend.unload();
  }
  const stats = (pick: (t: (typeof turns)[number]) => ChatResult): ChatTurnStats => ({
    ttftMs: median(turns.map((t) => pick(t).timings.timeToFirstTokenMs)),
    promptTokens: median(turns.map((t) => pick(t).usage.promptTokens)),
    evaluatedPromptTokens: median(turns.map((t) => pick(t).usage.evaluatedPromptTokens)),
  });
  return {
    backend: spec.backend,
    model: spec.model,
    turn1: stats((t) => t.t1),
    turn2: stats((t) => t.t2),
    turn2Cold: stats((t) => t.cold),
    turn2VsTurn1: median(turns.map((t) => t.t2.timings.timeToFirstTokenMs / t.t1.timings.timeToFirstTokenMs)),
    turn2VsCold: median(turns.map((t) => t.t2.timings.timeToFirstTokenMs / t.cold.timings.timeToFirstTokenMs)),
  };
}



/** Human-readable summary of a {@link ChatBenchResult}. */
export function formatChatBench(result: ChatBenchResult): string {
  const turn = (s: ChatTurnStats) => `${s.ttftMs.toFixed(1)} ms (${s.evaluatedPromptTokens}/${s.promptTokens})`;
  const lines = [
    `chat bench: ${result.repeats} conversations per case, greedy, 16 tokens per answer; TTFT median (evaluated/prompt tokens)`,
    `${"case".padEnd(42)} ${"turn 1".padStart(20)} ${"turn 2".padStart(20)} ${"turn 2 cold".padStart(20)} ${"t2÷t1".padStart(6)} ${"t2÷cold".padStart(7)}`,
    ...result.cases.map((c) =>
      `${`${c.backend} ${c.model}`.padEnd(42)} ${turn(c.turn1).padStart(20)} ${turn(c.turn2).padStart(20)} ${turn(c.turn2Cold).padStart(20)} ` +
      `${c.turn2VsTurn1.toFixed(3).padStart(6)} ${c.turn2VsCold.toFixed(3).padStart(7)}`),
    ...result.skipped.map((s) => `skipped: ${s}`),
  ];
  return lines.join("\n");
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href;
if (invokedDirectly) {
  const repeats = process.argv[2];
  const result = await benchChat(repeats ? { repeats: Number(repeats) } : {});
  console.log(formatChatBench(result));
  console.log(JSON.stringify(result));
}
