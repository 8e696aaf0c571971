/**
 * What this machine can run: which backends are available, and why not when they are not.
 */
import { availableParallelism, cpus, totalmem } from "node:os";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { MlxBackend, mlxAvailability } from "./backends/mlx.js";

/** Availability of one backend. */
export interface BackendStatus {
  available: boolean;
  /** Why the backend cannot run here, when it cannot. */
  reason?: string;
  /** Backend-specific details: the MLX device and version, or the node-llama-cpp version. */
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
    return { available: true, details: { device: runtime.device, mlxVersion: runtime.mlxVersion } };
  } catch (error) {
    return { available: false, reason: `the MLX engine failed to start: ${(error as Error).message}` };
  }
}

async function ggufStatus(): Promise<BackendStatus> {
  try {
    await import("node-llama-cpp");
    return { available: true, details: { nodeLlamaCpp: await packageVersion("node-llama-cpp") } };
  } catch (error) {
    return {
      available: false,
      reason: `node-llama-cpp is not installed (${(error as Error).message.split("\n")[0]}): run npm install node-llama-cpp`,
    };
  }
}

/** A dependency's version, read from its package.json (which its `exports` may not expose). */
async function packageVersion(name: string): Promise<string> {
  let dir = dirname(fileURLToPath(import.meta.resolve(name)));
  for (let depth = 0; depth < 6; depth++, dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(await readFile(join(dir, "package.json"), "utf8")) as { name?: string; version?: string };
      if (pkg.name === name && pkg.version) return pkg.version;
    } catch {
      // No package.json at this level.
    }
  }
  return "unknown";
}
