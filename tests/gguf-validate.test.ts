/**
 * Hostile GGUF files (issue #12): each mutation below once killed or hung the host process inside
 * llama.cpp or node-llama-cpp's metadata reader. Now the static checks (lib/gguf/validate.ts) refuse
 * it with a ModelFormatError naming the field, and what they cannot see is caught by the load probe
 * in a child process (lib/backends/gguf/probe.ts).
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelFormatError } from "../lib/errors.js";
import { loadModel } from "../lib/index.js";
import { GGML_TYPES, validateGguf } from "../lib/gguf/validate.js";
import { fieldNamed, ggufFields, withField } from "./fuzz/gguf-fields.js";

const MODELS = fileURLToPath(new URL("../../shared/models/", import.meta.url));
const STORIES = join(MODELS, "stories260K/stories260K.gguf");
const stories = readFileSync(STORIES);
const fields = ggufFields(stories);
let scratch: string;
let savedCacheDir: string | undefined;

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), "mlx-node-gguf-hostile-"));
  // The probe's "survived" markers go to a scratch cache, so every file here is really probed.
  savedCacheDir = process.env.MLX_NODE_CACHE_DIR;
  process.env.MLX_NODE_CACHE_DIR = join(scratch, "cache");
});
afterAll(() => {
  if (savedCacheDir === undefined) delete process.env.MLX_NODE_CACHE_DIR;
  else process.env.MLX_NODE_CACHE_DIR = savedCacheDir;
  rmSync(scratch, { recursive: true, force: true });
});

/** stories260K.gguf with one field set to one value, written to the scratch directory. */
function mutated(field: string, value: number | bigint): string {
  const path = join(scratch, `${field.replace(/[^a-z0-9]+/gi, "_")}-${String(value)}.gguf`);
  writeFileSync(path, withField(stories, fieldNamed(fields, field), value));
  return path;
}

async function loadError(path: string): Promise<Error> {
  const model = await loadModel(path).catch((e: unknown) => e);
  if (!(model instanceof Error)) {
    await model.unload();
    throw new Error(`${path} loaded`);
  }
  return model;
}

describe("GGUF static checks", () => {
  it("accept every shared GGUF file, each in well under a second", async () => {
    const files = [STORIES, join(MODELS, "llama-2-tiny-random/llama-2-tiny-random.gguf"),
      ...readdirSync(join(MODELS, "ggml-vocab")).filter((f) => f.endsWith(".gguf")).map((f) => join(MODELS, "ggml-vocab", f))];
    expect(files.length).toBe(12);
    for (const file of files) {
      const start = performance.now();
      const summary = await validateGguf(file);
      expect(performance.now() - start, file).toBeLessThan(1000);
      expect(summary.vocabSize, file).toBeGreaterThan(0);
    }
  });

  it("know the ggml types exactly as the bundled llama.cpp does", async () => {
    const { getLlama } = await import("node-llama-cpp");
    const llama = await getLlama({ gpu: false, build: "never", skipDownload: true, progressLogs: false });
    const bindings = (llama as unknown as { _bindings: { getBlockSizeForGgmlType(t: number): number | undefined; getTypeSizeForGgmlType(t: number): number | undefined } })._bindings;
    for (let type = 0; type < 48; type++) {
      const block = bindings.getBlockSizeForGgmlType(type);
      const known = block !== undefined && block > 0 ? [block, bindings.getTypeSizeForGgmlType(type)] : undefined;
      expect(GGML_TYPES.get(type), `ggml type ${type}`).toEqual(known);
    }
  });

  // The examples: each once aborted the process (GGML_ASSERT, fatal V8 error) or never finished loading.
  const cases: [field: string, value: number | bigint, named: RegExp][] = [
    ["llama.attention.head_count", 0, /"llama\.attention\.head_count".*0 is outside/],
    ["llama.attention.head_count_kv", 0, /"llama\.attention\.head_count_kv".*0 is outside/],
    ["llama.feed_forward_length", 0, /"llama\.feed_forward_length".*0 is outside/],
    ["llama.block_count", 0, /"llama\.block_count".*0 is outside/],
    ["llama.block_count", 100000, /"llama\.block_count".*100000 is outside/],
    ["llama.attention.layer_norm_rms_epsilon", NaN, /"llama\.attention\.layer_norm_rms_epsilon".*NaN/],
    ["tensor token_embd.weight type", 40, /tensor "token_embd\.weight".*type 40/],
    ["tensor output.weight n_dims", 0, /n_dims of tensor "output\.weight".*0 is outside 1 to 4/],
    ["tokenizer.ggml.scores element type", 9, /element type of metadata array "tokenizer\.ggml\.scores".*arrays of arrays/],
    ["tokenizer.ggml.tokens array length", 2n ** 32n, /length of metadata array "tokenizer\.ggml\.tokens".*4294967296 elements/],
    ["kv_count", 18, /at byte \d+/],
  ];
  for (const [field, value, named] of cases) {
    it(`refuse ${field} := ${String(value)} with a ModelFormatError naming it, within a second`, async () => {
      const path = mutated(field, value);
      const start = performance.now();
      const error = await loadError(path);
      expect(performance.now() - start).toBeLessThan(1000);
      expect(error).toBeInstanceOf(ModelFormatError);
      expect(error.message).toMatch(named);
    });
  }
});

describe("GGUF load probe (llama.cpp in a child process)", () => {
  it("turns a file that aborts llama.cpp into a ModelFormatError, and the host keeps working", async () => {
    // An F32 embedding relabelled I32 (same size) passes every static check, and llama.cpp aborts on it
    // (GGML_ASSERT in ggml-backend.cpp, SIGABRT: shown with raw node-llama-cpp).
    const path = mutated("tensor token_embd.weight type", 26);
    await expect(validateGguf(path)).resolves.toBeDefined();
    const error = await loadError(path);
    expect(error).toBeInstanceOf(ModelFormatError);
    expect(error.message).toMatch(/crashed llama\.cpp \((SIGABRT|SIGSEGV)\)/);

    const start = performance.now();
    const model = await loadModel(STORIES);
    console.log(`load with a probe of a new file identity: ${(performance.now() - start).toFixed(0)} ms`);
    expect((await model.generate("Once upon a time", { maxTokens: 8, temperature: 0 })).text).toMatch(/^, there was/);
    await model.unload();
    // Survival is recorded once per file identity, so a later process skips the probe.
    expect(readdirSync(join(scratch, "cache", "gguf-probe")).length).toBe(1);
    const again = performance.now();
    await (await loadModel(STORIES)).unload();
    console.log(`second load of the same file (no probe): ${(performance.now() - again).toFixed(0)} ms`);
  });

  it("reports llama.cpp's own refusal with its message, without loading the file in the host", async () => {
    // 18 is a valid width, but the tensors say 172: llama.cpp refuses it with an ordinary error.
    const error = await loadError(mutated("llama.feed_forward_length", 18));
    expect(error).toBeInstanceOf(ModelFormatError);
    expect(error.message).toMatch(/check_tensor_dims: tensor 'blk\.0\.ffn_gate\.weight' has wrong shape/);
    expect(existsSync(join(scratch, "cache", "gguf-probe"))).toBe(true);
  });
});
