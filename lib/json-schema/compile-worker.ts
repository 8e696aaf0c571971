/**
 * Worker thread entry of {@link compileJsonSchemaOffThread} (compile-async.ts): compiles schemas
 * sent by the main thread and posts back the compiled graph (structured clone keeps its shared
 * nodes shared) or the error message.
 */
import { parentPort } from "node:worker_threads";
import { compileJsonSchema } from "./schema.js";

parentPort?.on("message", ({ id, schema }: { id: number; schema: unknown }) => {
  try {
    parentPort?.postMessage({ id, compiled: compileJsonSchema(schema) });
  } catch (error) {
    parentPort?.postMessage({ id, error: (error as Error).message, invalid: (error as { code?: string }).code === "INVALID_OPTION" });
  }
});
