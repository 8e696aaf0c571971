/**
 * The shared InferenceBackend contract on the MLX engine, with the real stories260K model in
 * Hugging Face float32 format. Skips, printing the reason, where the MLX engine is unavailable.
 */
import { describe, expect, it } from "vitest";
import { MlxBackend } from "../lib/backends/mlx.js";
import { backendContractSuite } from "./contract/backend.contract.js";
import { stories260kMlx } from "./contract/stories260k-mlx.js";
import { mlxAvailable, mlxSkipReason } from "./support/mlx.js";

if (mlxAvailable) {
  backendContractSuite("mlx", () => new MlxBackend(), stories260kMlx);

  describe("mlx backend specifics", () => {
    it("reports public types: info, and lastGenerationStats whose finish uses the public words (abort, not cancelled)", async () => {
      const mlx = new MlxBackend();
      await mlx.load(stories260kMlx.path);
      try {
        expect(mlx.info).toMatchObject({ modelType: "llama", dtype: "float32", quantizationBits: 0 });
        await mlx.generate(stories260kMlx.greedy.prompt, { maxTokens: 3 });
        expect(mlx.lastGenerationStats).toMatchObject({ finish: "length", generatedTokens: 3 });
        const stream = mlx.generateStream(stories260kMlx.greedy.prompt, { maxTokens: 200 });
        for await (const _ of stream) break;
        expect((await stream.result).finishReason).toBe("abort");
        expect(mlx.lastGenerationStats?.finish).toBe("abort");
      } finally {
        await mlx.unload();
      }
    });
  });
} else {
  describe("mlx contract", () => it.skip(`skipped: ${mlxSkipReason}`, () => undefined));
}
