/**
 * Gate for tests that need the MLX engine: they run where the addon was built with mlx-c and
 * skip elsewhere, printing the reason (never silently).
 */
import { mlxAvailability } from "../../lib/backends/mlx.js";

const availability = mlxAvailability();

/** True when the MLX engine is compiled in and loads. */
export const mlxAvailable = availability.available;

/** Why the MLX engine is unavailable ("" when it is available). */
export const mlxSkipReason = availability.available ? "" : availability.reason;

if (!mlxAvailable) console.warn(`[mlx-node] MLX tests skipped: ${mlxSkipReason}`);
