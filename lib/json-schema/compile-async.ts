/**
 * Schema compilation off the event loop (#12: a large schema compiled on the main thread stalled
 * every other request, `/health` included). The compile runs in one worker thread shared by the
 * process; its result lands in the cache that {@link compileJsonSchema} reads, so a request made
 * after `await prepareJsonSchema(schema)` finds its schema compiled.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { InvalidOptionError } from "../errors.js";
import { packageRoot } from "../native.js";
import { cacheCompiled, cachedCompiled, compileJsonSchema, schemaError, schemaKey, type CompiledJsonSchema } from "./schema.js";

let worker: Worker | undefined;
let nextId = 0;
const pending = new Map<number, { resolve: (c: CompiledJsonSchema) => void; reject: (e: Error) => void }>();

/** The worker script: beside this module when running from dist, else dist's copy (tests run the sources). */
function workerScript(): string | undefined {
  const here = fileURLToPath(new URL("./compile-worker.js", import.meta.url));
  if (existsSync(here)) return here;
  const built = join(packageRoot(), "dist", "lib", "json-schema", "compile-worker.js");
  return existsSync(built) ? built : undefined;
}

function compileWorker(): Worker | undefined {
  if (worker) return worker;
  const script = workerScript();
  if (!script) return undefined;
  const w = new Worker(script);
  w.unref(); // an idle compiler never keeps the process alive
  w.on("message", ({ id, compiled, error, invalid }: { id: number; compiled?: CompiledJsonSchema; error?: string; invalid?: boolean }) => {
    const job = pending.get(id);
    pending.delete(id);
    if (!job) return;
    if (compiled) job.resolve(compiled);
    else job.reject(invalid ? schemaError((error ?? "").replace(/^Invalid option "jsonSchema": /, "")) : new InvalidOptionError("jsonSchema", "", undefined, { message: error ?? "jsonSchema compile failed" }));
  });
  w.on("error", (error) => {
    for (const job of pending.values()) job.reject(error);
    pending.clear();
    worker = undefined;
  });
  worker = w;
  return w;
}

/**
 * Compiles a schema on a worker thread and caches it, so that a generation with this schema
 * does not compile it on the event loop. Cheap when the schema is cached already; undefined for
 * no schema.
 * @throws InvalidOptionError (rejects) like {@link compileJsonSchema}.
 * @example
 * await prepareJsonSchema(schema); // off the event loop
 * await model.generate(prompt, { jsonSchema: schema });
 */
export async function prepareJsonSchema(schema: unknown): Promise<CompiledJsonSchema | undefined> {
  if (schema === undefined) return undefined;
  const key = schemaKey(schema); // checks the size bound before any copy to the worker
  const cached = cachedCompiled(key);
  if (cached) return cached;
  const w = compileWorker();
  if (!w) return compileJsonSchema(schema);
  const id = nextId++;
  const compiled = await new Promise<CompiledJsonSchema>((resolve, reject) => {
    pending.set(id, { resolve, reject });
    w.ref();
    w.postMessage({ id, schema });
  }).finally(() => {
    if (pending.size === 0) w.unref();
  });
  const result = { ...compiled, schema: schema as CompiledJsonSchema["schema"] };
  cacheCompiled(result);
  return result;
}
