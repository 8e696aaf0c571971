/** The contract model for the MLX engine: stories260K in Hugging Face float32 format, with its known greedy output. */
import { cp, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { DEFAULT_MLX_MAX_BATCH } from "../../lib/backends/mlx.js";
import type { ContractModel } from "./backend.contract.js";

const MODELS = fileURLToPath(new URL("../../../shared/models/", import.meta.url));
const F32 = join(MODELS, "stories260K/hf-f32");
const reference = JSON.parse(await readFile(join(MODELS, "stories260K/expected/greedy-once-upon-a-time.json"), "utf8")) as {
  prompt: string;
  prompt_ids: number[];
  "hf-f32_numpy": { ids: number[]; text: string };
};

export const stories260kMlx: ContractModel = {
  path: F32,
  parallel: DEFAULT_MLX_MAX_BATCH,
  greedy: {
    prompt: reference.prompt,
    promptIds: reference.prompt_ids,
    ids: reference["hf-f32_numpy"].ids,
    text: reference["hf-f32_numpy"].text,
  },
  async corruptCopies(dir) {
    const copy = async (label: string, name: string, damage: (bytes: Buffer) => Buffer) => {
      const path = join(dir, name);
      await cp(F32, path, { recursive: true });
      const file = join(path, "model.safetensors");
      await writeFile(file, damage(await readFile(file)));
      return { label, path };
    };
    return [
      await copy("truncated weights", "truncated", (b) => b.subarray(0, b.length >> 1)),
      await copy("header length past the end", "bad-length", (b) => {
        const c = Buffer.from(b);
        c.writeBigUInt64LE(BigInt(b.length * 2), 0);
        return c;
      }),
      await copy("text instead of weights", "text", () => Buffer.from("not a safetensors file\n")),
    ];
  },
  async incompleteCopies(dir) {
    const path = join(dir, "no-weights");
    await cp(F32, path, { recursive: true });
    await rm(join(path, "model.safetensors"));
    return [{ label: "a model directory without weights", path }];
  },
};
