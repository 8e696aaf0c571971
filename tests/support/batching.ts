/**
 * Checks shared by the batching tests of every family: a batch of rows of different lengths
 * (left-padded, each at its own position) must give each row exactly what it gives alone.
 */
import { expect } from "vitest";
import type { GenerateOptions } from "../../lib/backend.js";
import type { MlxBackend } from "../../lib/backends/mlx.js";

/** `n` token ids in [3, 203), different for each `seed`. */
export const idsOfLength = (n: number, seed: number): number[] => Array.from({ length: n }, (_, k) => 3 + ((k * 7 + seed * 13) % 200));

/** Max |logit difference| between each prompt's last-position logits batched and alone. */
export async function batchedVersusAlone(model: MlxBackend, prompts: number[][]): Promise<number> {
  const batched = await model.batchLastLogits(prompts);
  let worst = 0;
  for (const [i, p] of prompts.entries()) {
    const alone = (await model.logits(p)).at(-1)!;
    for (let j = 0; j < alone.length; j++) worst = Math.max(worst, Math.abs(alone[j] - batched[i][j]));
  }
  return worst;
}

/** Runs the requests one by one, then all at once: each must return its solo tokens. */
export async function expectConcurrentEqualsAlone(model: MlxBackend, requests: { prompt: number[]; options: GenerateOptions }[], label = ""): Promise<void> {
  const alone = [];
  for (const r of requests) alone.push((await model.generate(r.prompt, r.options)).tokens);
  const together = await Promise.all(requests.map((r) => model.generate(r.prompt, r.options)));
  expect(together.map((r) => r.tokens), label).toEqual(alone);
}
