/**
 * The shared InferenceBackend contract on the MLX engine, with the real stories260K model in
 * Hugging Face float32 format. Skips, printing the reason, where the MLX engine is unavailable.
 */
import { describe, it } from "vitest";
import { MlxBackend } from "../lib/backends/mlx.js";
import { backendContractSuite } from "./contract/backend.contract.js";
import { stories260kMlx } from "./contract/stories260k-mlx.js";
import { mlxAvailable, mlxSkipReason } from "./support/mlx.js";

if (mlxAvailable) {
  backendContractSuite("mlx", () => new MlxBackend(), stories260kMlx);
} else {
  describe("mlx contract", () => it.skip(`skipped: ${mlxSkipReason}`, () => undefined));
}
