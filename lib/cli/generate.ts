/** `mlx-node generate`: streams a completion to stdout, speed and backend to stderr. Ctrl-C stops it cleanly. */
import { parseArgs } from "node:util";
import { InvalidOptionError } from "../errors.js";
import type { GenerateOptions, JsonSchema } from "../backend.js";
import { loadModel } from "../backends/select.js";
import { SAMPLING_PARAMETER_NAMES, type SamplingParameterName } from "../sampling.js";
import { progressReporter } from "./hub.js";
import { EXIT } from "./exit-codes.js";
import { fileFlag, numberFlag } from "./flags.js";

/** `--top-p` for `topP`: the flag of a sampling parameter. */
function flagOf(name: SamplingParameterName): string {
  return name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** One flag per sampling parameter of lib/sampling.ts; the two used most have a short form. */
const SAMPLING_FLAGS = Object.fromEntries(SAMPLING_PARAMETER_NAMES.map((name) => {
  const short = ({ maxTokens: "n", temperature: "t" } as Partial<Record<SamplingParameterName, string>>)[name];
  return [flagOf(name), { type: "string" as const, ...(short ? { short } : {}) }];
}));

export async function runGenerate(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      model: { type: "string", short: "m" },
      backend: { type: "string" },
      ...SAMPLING_FLAGS,
      stop: { type: "string", multiple: true },
      "json-schema": { type: "string" },
      "context-size": { type: "string" },
      threads: { type: "string" },
      adapter: { type: "string" },
      fuse: { type: "boolean" },
    },
  });
  if (!values.model) throw new InvalidOptionError("--model", "a model path", undefined);
  const prompt = positionals.join(" ");
  if (!prompt) throw new InvalidOptionError("prompt", "a prompt after the options", "nothing");

  const jsonSchema = values["json-schema"] === undefined ? undefined : await readSchema(values["json-schema"]);
  const backend = (values.backend ?? "auto") as "auto" | "mlx" | "gguf";
  const model = await loadModel(values.model, {
    onProgress: progressReporter(),
    backend,
    contextSize: numberFlag("--context-size", values["context-size"]),
    threads: numberFlag("--threads", values.threads),
    ...(values.adapter !== undefined ? { adapter: values.adapter } : {}),
    ...(values.fuse ? { fuse: true } : {}),
  });
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once("SIGINT", onSigint);
  try {
    const options: GenerateOptions = {
      ...Object.fromEntries(SAMPLING_PARAMETER_NAMES.map((name) => [name, numberFlag(`--${flagOf(name)}`, (values as Record<string, string | undefined>)[flagOf(name)])])),
      stop: values.stop,
      jsonSchema,
      signal: controller.signal,
    };
    for (const key of Object.keys(options) as (keyof GenerateOptions)[]) if (options[key] === undefined) delete options[key];
    const stream = model.generateStream(prompt, options);
    for await (const chunk of stream) process.stdout.write(chunk.text);
    const result = await stream.result;
    process.stdout.write("\n");
    const t = result.timings;
    process.stderr.write(
      `[${model.name}: ${model.selection.reason}] ${result.usage.completionTokens} tokens, ` +
        `${t.generatedTokensPerSecond.toFixed(1)} tok/s, prompt ${t.promptTokensPerSecond.toFixed(1)} tok/s, ` +
        `first token ${t.timeToFirstTokenMs.toFixed(0)} ms, finish: ${result.finishReason}\n`,
    );
    return EXIT.ok;
  } finally {
    process.off("SIGINT", onSigint);
    await model.unload();
  }
}

async function readSchema(file: string): Promise<JsonSchema> {
  const text = await fileFlag("--json-schema", file);
  try {
    return JSON.parse(text) as JsonSchema;
  } catch (error) {
    throw new InvalidOptionError("--json-schema", "a file holding a JSON schema", `${file} (${(error as Error).message})`);
  }
}
