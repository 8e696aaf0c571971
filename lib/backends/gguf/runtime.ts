/**
 * The process-wide node-llama-cpp runtime: the lazily imported package, one `Llama` per process,
 * and the llama.cpp error log that explains failed loads.
 *
 * node-llama-cpp is an optional dependency and is imported lazily on the first load, so the
 * package works without it as long as the GGUF backend is not used.
 */
import type { Llama } from "node-llama-cpp";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { BackendUnavailableError } from "../../errors.js";
import type { BackendStatus } from "../../platform.js";

type NodeLlamaCpp = typeof import("node-llama-cpp");

let nodeLlamaCpp: Promise<NodeLlamaCpp> | undefined;
let sharedLlama: Promise<Llama> | undefined;
/** Error messages llama.cpp logged recently, numbered so a load can pick out its own. */
const nativeErrors: { seq: number; message: string }[] = [];
let nativeErrorSeq = 0;

function onNativeLog(level: string, message: string): void {
  // Warnings (e.g. "bad special token" in older GGUFs) are noise for users; errors explain failed loads.
  if (level !== "error" && level !== "fatal") return;
  const text = message.trim();
  if (!text) return;
  nativeErrors.push({ seq: ++nativeErrorSeq, message: text });
  if (nativeErrors.length > 32) nativeErrors.shift();
}

/** A mark in llama.cpp's error log: {@link nativeErrorsSince} gives what was logged after it. */
export function nativeErrorMark(): number {
  return nativeErrorSeq;
}

/** The error messages llama.cpp logged after `mark` (from {@link nativeErrorMark}). */
export function nativeErrorsSince(mark: number): string[] {
  return nativeErrors.filter((e) => e.seq > mark).map((e) => e.message);
}

async function importNodeLlamaCpp(): Promise<NodeLlamaCpp> {
  nodeLlamaCpp ??= import("node-llama-cpp").catch((error: unknown) => {
    nodeLlamaCpp = undefined;
    if (isPackageMissing(error, "node-llama-cpp")) {
      throw new BackendUnavailableError("gguf", "node-llama-cpp is not installed: run npm install node-llama-cpp");
    }
    throw new BackendUnavailableError("gguf", `node-llama-cpp failed to load: ${errorMessage(error)}`);
  });
  return nodeLlamaCpp;
}

/**
 * True when `error` (or an error it wraps, as bundlers and test runners do) says that the package
 * itself cannot be found, not one of its dependencies.
 */
function isPackageMissing(error: unknown, name: string): boolean {
  for (let e = error, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if ((code === "ERR_MODULE_NOT_FOUND" || code === "MODULE_NOT_FOUND") && e.message.includes(`'${name}'`)) return true;
  }
  return false;
}

/**
 * The process-wide llama.cpp instance. It uses the prebuilt CPU binary shipped in the
 * `@node-llama-cpp/<platform>` package: `build: "never"` and `skipDownload` guarantee nothing is
 * compiled or downloaded at run time, `gpu: false` skips probing CUDA/Vulkan binaries, and
 * `maxThreads: 0` lifts node-llama-cpp's thread cap so each context uses exactly the threads we
 * give it (its default cap is max(cores, 4), which oversubscribes small machines).
 */
export function getSharedLlama(): Promise<Llama> {
  sharedLlama ??= (async () => {
    const lib = await importNodeLlamaCpp();
    try {
      return await lib.getLlama({
        gpu: false,
        build: "never",
        usePrebuiltBinaries: true,
        skipDownload: true,
        progressLogs: false,
        maxThreads: 0,
        logLevel: lib.LlamaLogLevel.warn,
        logger: onNativeLog,
      });
    } catch (error) {
      throw new BackendUnavailableError(
        "gguf",
        `no usable prebuilt llama.cpp binary for ${process.platform}-${process.arch}: ${errorMessage(error)}`,
      );
    }
  })();
  sharedLlama.catch(() => (sharedLlama = undefined));
  return sharedLlama;
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Whether node-llama-cpp can be imported here, and its version (for `info()`). */
export async function ggufStatus(): Promise<BackendStatus> {
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
