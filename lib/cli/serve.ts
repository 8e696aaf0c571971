/**
 * `mlx-node serve`: an OpenAI-compatible HTTP server over one model, on loopback by default.
 * Logs one line per request to stderr; SIGINT/SIGTERM close it cleanly (running requests are
 * aborted, the model is unloaded).
 */
import { isIP, type AddressInfo } from "node:net";
import { basename } from "node:path";
import { parseArgs } from "node:util";
import { loadModel } from "../backends/select.js";
import { progressReporter } from "./hub.js";
import { InvalidOptionError } from "../errors.js";
import { accessPolicy } from "../server/access.js";
import { createServer } from "../server/server.js";
import { EXIT } from "./exit-codes.js";
import { fileFlag, integerFlag } from "./flags.js";

export async function runServe(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string", short: "m" },
      backend: { type: "string" },
      host: { type: "string" },
      port: { type: "string", short: "p" },
      "model-id": { type: "string" },
      adapter: { type: "string", multiple: true },
      "chat-template": { type: "string" },
      "context-size": { type: "string" },
      threads: { type: "string" },
      "max-queued": { type: "string" },
      parallel: { type: "string" },
      cors: { type: "string" },
      "allow-host": { type: "string", multiple: true },
      quiet: { type: "boolean", short: "q" },
    },
  });
  if (!values.model) throw new InvalidOptionError("--model", "a model path", undefined);
  const port = integerFlag("--port", values.port) ?? 8080;
  if (port < 0 || port > 65535) throw new InvalidOptionError("--port", "0..65535", port);
  const host = values.host ?? "127.0.0.1";
  // The name served on (--host mybox.lan) is one clients will use; IP addresses need no allowing.
  const allowedHosts = [...(values["allow-host"] ?? []), ...(isIP(host) === 0 ? [host] : [])];
  accessPolicy(values.cors, allowedHosts, { cors: "--cors", hosts: "--allow-host" }); // checked before the model loads
  const chatTemplate = values["chat-template"] ? await fileFlag("--chat-template", values["chat-template"]) : undefined;

  const model = await loadModel(values.model, {
    onProgress: progressReporter(),
    backend: (values.backend ?? "auto") as "auto" | "mlx" | "gguf",
    contextSize: integerFlag("--context-size", values["context-size"]),
    threads: integerFlag("--threads", values.threads),
    maxQueuedRequests: integerFlag("--max-queued", values["max-queued"]),
    maxBatch: integerFlag("--parallel", values.parallel),
  });
  for (const spec of values.adapter ?? []) {
    const eq = spec.indexOf("=");
    if (eq <= 0 || eq === spec.length - 1) throw new InvalidOptionError("--adapter", "name=dir (repeatable)", spec);
    await model.loadAdapter(spec.slice(0, eq), spec.slice(eq + 1)).catch(async (error: unknown) => {
      await model.unload();
      throw error;
    });
  }
  const modelId = values["model-id"] ?? basename(values.model.replace(/[/\\]+$/, ""));
  const server = createServer(model, {
    modelId,
    ...(chatTemplate !== undefined ? { chatTemplate } : {}),
    ...(values.cors !== undefined ? { corsOrigin: values.cors } : {}),
    allowedHosts,
    onRequestEnd: values.quiet
      ? undefined
      : (e) =>
          process.stderr.write(
            `${e.method} ${e.path} ${e.status}${e.stream ? " stream" : ""}` +
              `${e.finishReason ? ` finish=${e.finishReason} tokens=${e.completionTokens}` : ""}` +
              `${e.error ? ` error="${e.error}"` : ""} ${e.ms.toFixed(0)} ms\n`,
          ),
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
  process.stderr.write(
    `mlx-node: serving ${modelId} (${model.name}: ${model.selection.reason}) at http://${shownHost}:${address.port}/v1\n` +
      model.adapterNames.map((a) => `mlx-node: adapter ${a}: request it with "model": "${modelId}:${a}"\n`).join(""),
  );

  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      // Closing the sockets aborts their generations (see createServer); then the model is freed.
      server.close(() => resolve());
      server.closeAllConnections();
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
  await model.unload();
  process.stderr.write("mlx-node: server stopped\n");
  return EXIT.ok;
}
