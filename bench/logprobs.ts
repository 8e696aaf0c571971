/**
 * What `logprobs` costs: decode tokens/s without it, with `logprobs: true` and with
 * `topLogprobs: 20`, on the real SmolLM2-135M-Instruct (49k vocabulary) through both backends
 * (GGUF Q4_1 and MLX 4-bit), greedy, interleaved rounds, median. Prints one markdown row per backend.
 *   npm run build:ts && node dist/bench/logprobs.js [tokens=64] [rounds=3]
 */
import { GgufBackend } from "../lib/backends/gguf.js";
import { MlxBackend, mlxAvailability } from "../lib/backends/mlx.js";
import type { GenerateOptions, InferenceBackend } from "../lib/backend.js";
import { realModels } from "../tests/support/real-models.js";

const VARIANTS: [string, GenerateOptions][] = [["off", {}], ["logprobs", { logprobs: true }], ["top 20", { logprobs: true, topLogprobs: 20 }]];

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function measure(backend: InferenceBackend, path: string, tokens: number, rounds: number): Promise<number[]> {
  await backend.load(path, { contextSize: 512 });
  try {
    const runs = VARIANTS.map(() => [] as number[]);
    await backend.generate("Write a story about a robot.", { maxTokens: 8 }); // warm-up
    for (let round = 0; round < rounds; round++) {
      for (const [i, [, options]] of VARIANTS.entries()) {
        const r = await backend.generate("Write a story about a robot.", { ...options, maxTokens: tokens, temperature: 0, ignoreEos: true });
        runs[i].push(r.timings.generatedTokensPerSecond);
      }
    }
    return runs.map(median);
  } finally {
    await backend.unload();
  }
}

async function main(): Promise<void> {
  const tokens = Number(process.argv[2] ?? 64);
  const rounds = Number(process.argv[3] ?? 3);
  const real = realModels();
  if (!real.available) throw new Error(real.reason);
  const model = real.models.find((m) => m.name === "smollm2-135m-instruct");
  if (!model) throw new Error("smollm2-135m-instruct is missing from the real models");
  console.log(`| ${model.name}, ${tokens} tokens, median of ${rounds} | ${VARIANTS.map(([name]) => `${name} tok/s`).join(" | ")} | top 20 ÷ off |`);
  console.log(`|---|${VARIANTS.map(() => "---|").join("")}---|`);
  const rows: [string, () => InferenceBackend, string][] = [["gguf (Q4_1)", () => new GgufBackend(), model.gguf]];
  if (mlxAvailability().available) rows.push(["mlx (4-bit)", () => new MlxBackend(), model.mlx4bit]);
  for (const [name, make, path] of rows) {
    const tps = await measure(make(), path, tokens, rounds);
    console.log(`| ${name} | ${tps.map((t) => t.toFixed(1)).join(" | ")} | ${(tps[2] / tps[0]).toFixed(2)} |`);
  }
}

await main();
