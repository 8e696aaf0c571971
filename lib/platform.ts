/**
 * What this machine can run: which backends are available, and why not when they are not.
 */
import { availableParallelism, cpus, totalmem } from "node:os";
import { ggufStatus } from "./backends/gguf/runtime.js";
import { MlxBackend, mlxAvailability } from "./backends/mlx.js";

/** Availability of one backend. */
export interface BackendStatus {
  available: boolean;
  /** Why the backend cannot run here, when it cannot. */
  reason?: string;
  /** Backend-specific details: the MLX device, version and BLAS, or the node-llama-cpp version. */
  details?: Record<string, string>;
}

/** The answer of {@link info}. */
export interface PlatformInfo {
  platform: NodeJS.Platform;
  arch: string;
  node: string;
  cpuModel: string;
  logicalCores: number;
  totalMemoryBytes: number;
  backends: { mlx: BackendStatus; gguf: BackendStatus };
}

/**
 * Reports the platform and which backends are available, with reasons.
 *
 * @example
 * ```ts
 * import { info } from "mlx-node";
 * const { backends } = await info();
 * if (!backends.mlx.available) console.log("MLX unavailable:", backends.mlx.reason);
 * ```
 */
export async function info(): Promise<PlatformInfo> {
  return {
    platform: process.platform,
    arch: process.arch,
    node: process.version,
    cpuModel: cpus()[0]?.model ?? "unknown",
    logicalCores: availableParallelism(),
    totalMemoryBytes: totalmem(),
    backends: { mlx: await mlxStatus(), gguf: await ggufStatus() },
  };
}

async function mlxStatus(): Promise<BackendStatus> {
  const availability = mlxAvailability();
  if (!availability.available) return { available: false, reason: availability.reason };
  try {
    const runtime = await MlxBackend.runtimeInfo();
    const { library, source, openblas } = runtime.blas;
    const blas = `${library} (${source}${openblas ? `; ${openblas.config}, ${openblas.threads} thread(s)` : ""})`;
    return { available: true, details: { device: runtime.device, mlxVersion: runtime.mlxVersion, blas } };
  } catch (error) {
    return { available: false, reason: `the MLX engine failed to start: ${(error as Error).message}` };
  }
}
