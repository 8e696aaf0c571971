#!/usr/bin/env node
/**
 * The mlx-node command line: `generate` streams a completion, `eval` scores a model on a fixtures
 * file, `pull`/`ls`/`rm` manage models in the Hugging Face cache, `info` says what can run here,
 * `build-native` builds the addon. Run `mlx-node help` for the options.
 */
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { MlxNodeError } from "../errors.js";
import { EXIT, exitCodeOf } from "./exit-codes.js";
import { packageRoot } from "../native.js";
import { runEvalCommand } from "./eval.js";
import { runGenerate } from "./generate.js";
import { runLs, runPull, runRm } from "./hub.js";
import { runInfo } from "./info.js";
import { runServe } from "./serve.js";

const USAGE = `Usage: mlx-node <command> [options]

Commands:
  generate --model <path> [options] "prompt"   Stream a completion to stdout; speed and backend go to stderr
  eval --model <path> --fixtures <file>        Run a fixtures file; report pass rate, outputs, latency
  serve --model <path> [options]               OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions)
  pull <name>                                  Download a model into the Hugging Face cache; print its path
  ls [--json]                                  Cached models: name, revision, format, size on disk
  rm <name>                                    Remove a model (every revision) from the cache
  info [--json]                                Platform, available backends, and why others are not
  build-native                                 Build the native addon (needs CMake, a C++17 compiler; mlx-c for MLX)
  help                                         This text

A model is a local path (.gguf file or MLX/Hugging Face model directory; an existing path wins) or a
Hugging Face name: owner/name (MLX repository), hf:owner/name/file.gguf, hf:owner/name:Q4_K_M, each
with an optional @revision after the repository. Names are fetched into the Hugging Face cache
(HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN; HF_HUB_OFFLINE=1 uses the cache only).

generate options:
  --model, -m <model>       path or name (required)
  --backend <name>          auto | mlx | gguf (default: auto)
  --max-tokens, -n <n>      tokens to generate (default: 256)
  --temperature, -t <x>     0 is greedy (default: 0)
  --top-p <x>  --top-k <n>  --min-p <x>  --repetition-penalty <x>  --repetition-context-size <n>  --seed <n>
  --stop <text>             stop string (repeatable)
  --json-schema <file>      answer with JSON valid against this schema (guaranteed)
  --adapter <dir> [--fuse]  apply an mlx_lm.lora adapter directory (a llama.cpp LoRA .gguf for GGUF); --fuse merges it
  --context-size <n>  --threads <n>

eval options:
  --model, -m <model>       path or name (required)
  --fixtures, -f <file>     fixtures JSON: { defaults?, chatTemplate?, forbid?, cases: [...] } (required)
  --backend <name>          auto | mlx | gguf (default: auto)
  --out, -o <dir>           write <dir>/eval.md and <dir>/eval.json (default: markdown to stdout)
  --threshold <0..1>        minimum pass rate (default: 1, every case must pass)
  --context-size <n>  --threads <n>
  Exit code: 0 pass rate >= threshold; 1 below it (or the model failed to load);
             2 bad arguments or invalid fixtures (nothing ran)

serve options:
  --model, -m <model>       path or name (required)
  --host <addr>             address to listen on (default: 127.0.0.1, this machine only)
  --port, -p <n>            port (default: 8080; 0 picks a free one)
  --model-id <name>         name in /v1/models and responses (default: the model's file or directory name)
  --chat-template <file>    Jinja chat template for models without one
  --adapter <name>=<dir>    keep an mlx_lm.lora adapter; requests pick it with "model": "<model-id>:<name>" (repeatable)
  --max-queued <n>          requests that may wait for the model before 503 (default: the library's)
  --parallel <n>            requests generated at once, batched (maxBatch; default MLX 8, GGUF 1)
  --cors <origin>           let web pages from <origin> ("*": any) call the server (default: none)
  --allow-host <name>       accept this Host name besides IP addresses and localhost (repeatable;
                            ".lan": a domain and its subdomains; "*": any) (default: the --host name)
  --backend <name>  --context-size <n>  --threads <n>  --quiet (no request log)

Exit codes: ${EXIT.ok} done; ${EXIT.failure} the run failed (model not found or not loadable, generation error,
port in use; eval below its threshold); ${EXIT.usage} wrong command line (unknown command or option, missing or
malformed value, unreadable --json-schema/--chat-template file: nothing ran)
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "generate":
      return runGenerate(rest);
    case "eval":
      return runEvalCommand(rest);
    case "serve":
      return runServe(rest);
    case "pull":
      return runPull(rest);
    case "ls":
      return runLs(rest);
    case "rm":
      return runRm(rest);
    case "info": {
      const { values } = parseArgs({ args: rest, options: { json: { type: "boolean" } } });
      return runInfo(Boolean(values.json));
    }
    case "build-native": {
      const result = spawnSync(process.execPath, [join(packageRoot(), "scripts", "build-native.mjs")], { stdio: "inherit" });
      return result.status ?? EXIT.failure;
    }
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(USAGE);
      return EXIT.ok;
    case undefined:
      process.stderr.write(USAGE);
      return EXIT.usage;
    default:
      process.stderr.write(`mlx-node: unknown command "${command}"\n\n${USAGE}`);
      return EXIT.usage;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    const message = error instanceof MlxNodeError ? `${error.code}: ${error.message}` : error instanceof Error ? error.message : String(error);
    const code = exitCodeOf(error);
    process.stderr.write(`mlx-node: ${message}\n${code === EXIT.usage ? 'Run "mlx-node help" for usage.\n' : ""}`);
    process.exitCode = code;
  },
);
