/**
 * Gate for tests that need the MLX engine: they run where the addon was built with mlx-c and
 * skip elsewhere, printing the reason (never silently).
 */
import { MlxBackend, mlxAvailability } from "../../lib/backends/mlx.js";

const availability = mlxAvailability();

/** True when the MLX engine is compiled in and loads. */
export const mlxAvailable = availability.available;

/** Why the MLX engine is unavailable ("" when it is available). */
export const mlxSkipReason = availability.available ? "" : availability.reason;

if (!mlxAvailable) console.warn(`[mlx-node] MLX tests skipped: ${mlxSkipReason}`);

/**
 * Peak MLX memory above what was active before, after loading `dir` and after a first token (a
 * lazily stacked or split layout would hold the pieces and the whole there); the load's weight
 * bytes and KV bytes per token.
 */
export async function loadPeaks(dir: string): Promise<{ load: number; firstToken: number; weights: number; kvBytesPerToken: number }> {
  await MlxBackend.setMemoryLimits({ resetPeak: true });
  const before = await MlxBackend.memory();
  const mlx = new MlxBackend();
  await mlx.load(dir);
  try {
    const load = (await MlxBackend.memory()).peakBytes - before.activeBytes;
    await mlx.generate([1, 5, 9, 13], { maxTokens: 1, temperature: 0, ignoreEos: true });
    const firstToken = (await MlxBackend.memory()).peakBytes - before.activeBytes;
    return { load, firstToken, weights: mlx.info!.weightBytes, kvBytesPerToken: mlx.info!.kvBytesPerToken };
  } finally {
    await mlx.unload();
  }
}
