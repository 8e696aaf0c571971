/**
 * Decode speed with a LoRA adapter: tokens/s of the same model and prompt without an adapter, with
 * an unfused rank-r adapter on every linear of every block (a request naming it), and with the
 * adapter fused at load; reported as ratios to "none". Runs are interleaved round by round in a
 * rotating order, and each ratio is the median of the per-round ratios (pairs measured back to back),
 * so the shared machine's noise hits every variant alike.
 *
 *   node dist/bench/lora.js [--model DIR]... [--rank 8] [--tokens 64] [--rounds 7]
 *
 * Without --model: a synthetic SmolLM2-135M-shaped model (8 of its 30 blocks, 4-bit and float16,
 * made in bench/.models/ by bench/synthetic) and stories260K (hf-f32). The adapter's weights are
 * random (speed does not depend on them), written in mlx_lm.lora's format.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { MlxBackend } from "../lib/backends/mlx.js";
import { writeRandomAdapter } from "../tests/support/lora.js";
import { median } from "./stats.js";
import { makeModel } from "./synthetic/make-model.js";

async function benchModel(modelDir: string, rank: number, tokens: number, rounds: number): Promise<void> {
  const adapter = writeRandomAdapter(modelDir, mkdtempSync(join(tmpdir(), "mlx-node-lora-bench-")), { rank });
  const base = new MlxBackend(), fused = new MlxBackend();
  try {
    await base.load(modelDir);
    await base.loadAdapter("lora", adapter);
    await fused.load(modelDir, { adapter, fuse: true });
    const variants = [
      { name: "none", run: (p: number[]) => base.generate(p, { maxTokens: tokens, ignoreEos: true }) },
      { name: "unfused", run: (p: number[]) => base.generate(p, { maxTokens: tokens, ignoreEos: true, adapter: "lora" }) },
      { name: "fused", run: (p: number[]) => fused.generate(p, { maxTokens: tokens, ignoreEos: true }) },
    ];
    const prompt = base.tokenize("Once upon a time there was", { addSpecialTokens: true });
    for (const v of variants) await v.run(prompt); // warm-up
    const speed: Record<string, number[]> = { none: [], unfused: [], fused: [] };
    for (let r = 0; r < rounds; r++) {
      for (let k = 0; k < variants.length; k++) {
        const v = variants[(r + k) % variants.length];
        speed[v.name].push((await v.run(prompt)).timings.generatedTokensPerSecond);
      }
    }
    const ratio = (name: string) => median(speed[name].map((s, r) => s / speed.none[r]));
    const tps = (name: string) => median(speed[name]).toFixed(1);
    console.log(
      `${modelDir}: decode tok/s none ${tps("none")}, unfused rank ${rank} ${tps("unfused")}, fused ${tps("fused")}; ` +
        `unfused/none ${ratio("unfused").toFixed(3)}, fused/none ${ratio("fused").toFixed(3)} (${rounds} rounds of ${tokens} tokens)`,
    );
  } finally {
    await base.unload();
    await fused.unload();
    rmSync(adapter, { recursive: true, force: true });
  }
}

const { values } = parseArgs({
  options: { model: { type: "string", multiple: true }, rank: { type: "string" }, tokens: { type: "string" }, rounds: { type: "string" } },
});
let models = values.model;
if (!models) {
  models = (["q4", "float16"] as const).map((dtype) => {
    const out = resolve(`bench/.models/smollm2-135m-L8-mlx-${dtype}`);
    if (!existsSync(join(out, "config.json"))) makeModel({ shape: "smollm2-135m", format: "mlx", dtype, layers: 8, out });
    return out;
  });
  models.push(resolve("../shared/models/stories260K/hf-f32"));
}
for (const m of models) await benchModel(m, Number(values.rank ?? 8), Number(values.tokens ?? 64), Number(values.rounds ?? 7));
