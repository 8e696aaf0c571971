/**
 * Hostile MLX model directories (issue #12): a shard name that leaves the directory, config.json
 * sizes that overflow or make no sense, safetensors headers the spec forbids, and a tokenizer of an
 * unknown type. Each is refused at load with a typed error naming the problem, quickly and without
 * reading outside the model directory.
 */
import { cpSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { MlxBackend } from "../lib/backends/mlx.js";
import { MlxNodeError, ModelConfigError, ModelFormatError } from "../lib/errors.js";
import { Tokenizer } from "../lib/tokenizer.js";
import { mlxAvailable } from "./support/mlx.js";

const stories = fileURLToPath(new URL("../../shared/models/stories260K/", import.meta.url));
const scratch = mkdtempSync(join(tmpdir(), "mlx-node-hostile-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** A copy of a stories260K directory, changed by `edit`. */
function variant(name: string, base: "hf-f32" | "mlx-4bit", edit: (dir: string) => void): string {
  const dir = join(scratch, name);
  cpSync(join(stories, base), dir, { recursive: true });
  edit(dir);
  return dir;
}

function editJson(file: string, edit: (json: Record<string, unknown>) => void): void {
  const json = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  edit(json);
  writeFileSync(file, JSON.stringify(json));
}

/** Rewrites a safetensors file's JSON header with `edit(headerText)`, keeping the data. */
function editSafetensorsHeader(file: string, edit: (header: string) => string): void {
  const bytes = readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = Buffer.from(edit(bytes.toString("utf8", 8, 8 + n)), "utf8");
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(header.length));
  writeFileSync(file, Buffer.concat([prefix, header, bytes.subarray(8 + n)]));
}

async function loadError(dir: string): Promise<Error> {
  const mlx = new MlxBackend();
  const start = performance.now();
  const error = await mlx.load(dir).then(() => undefined, (e: unknown) => e as Error);
  const ms = performance.now() - start;
  if (!error) {
    await mlx.unload();
    throw new Error(`${dir} loaded`);
  }
  expect(ms, "refused quickly").toBeLessThan(2000);
  return error;
}

describe.skipIf(!mlxAvailable)("hostile MLX directories", () => {
  it("a weight_map entry that climbs out of the directory is refused without opening the file", async () => {
    const passwd = statSync("/etc/passwd");
    for (const [name, target] of [["dotdot", "../../../../etc/passwd"], ["absolute", "/etc/passwd"]] as const) {
      const dir = variant(`traversal-${name}`, "mlx-4bit", (d) =>
        editJson(join(d, "model.safetensors.index.json"), (j) => {
          const map = j.weight_map as Record<string, string>;
          map[Object.keys(map)[0]!] = target;
        }));
      const error = await loadError(dir);
      expect(error).toBeInstanceOf(ModelFormatError);
      expect(error.message).toContain(`shard name '${target}' must be a file name inside the model directory`);
      // Nothing read from the target: not its size, not its first bytes.
      expect(error.message).not.toContain(String(passwd.size));
      expect(error.message).not.toMatch(/root|header length/);
    }
  });

  it("a shard that is a symlink out of the directory is refused; a Hugging Face cache snapshot still loads", async () => {
    const escaping = variant("symlink-out", "hf-f32", (d) => {
      rmSync(join(d, "model.safetensors"));
      symlinkSync("/etc/passwd", join(d, "model.safetensors"));
    });
    const error = await loadError(escaping);
    expect(error).toBeInstanceOf(ModelFormatError);
    expect(error.message).toMatch(/shard 'model\.safetensors' resolves outside the model directory/);

    // huggingface_hub's layout: snapshots/<rev>/model.safetensors -> ../../blobs/<hash>.
    const repo = join(scratch, "hub", "models--org--stories");
    const snapshot = join(repo, "snapshots", "rev1");
    mkdirSync(join(repo, "blobs"), { recursive: true });
    cpSync(join(stories, "hf-f32"), snapshot, { recursive: true });
    renameSync(join(snapshot, "model.safetensors"), join(repo, "blobs", "0123abcd"));
    symlinkSync("../../blobs/0123abcd", join(snapshot, "model.safetensors"));
    const mlx = new MlxBackend();
    await mlx.load(snapshot);
    expect((await mlx.generate("Once upon a time", { maxTokens: 4, temperature: 0 })).text).toMatch(/^, there was/);
    await mlx.unload();
  });

  it("head_dim 1073741832 with llama3 rope scaling is a ModelConfigError naming head_dim, before any allocation", async () => {
    const dir = variant("head-dim", "hf-f32", (d) =>
      editJson(join(d, "config.json"), (j) => {
        j.head_dim = 1073741832; // times 8 heads overflows int32 to 64, the real q_proj rows
        j.rope_scaling = { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
      }));
    const error = await loadError(dir);
    expect(error).toBeInstanceOf(ModelConfigError);
    expect((error as ModelConfigError).code).toBe("BAD_CONFIG");
    expect(error.message).toMatch(/config\.json: 'head_dim' = 1073741832 is outside 2 to 1024/);
    const memory = await MlxBackend.memory();
    expect(memory.activeBytes).toBeLessThan(64 * 2 ** 20);
  });

  for (const value of [0, -1]) {
    it(`max_position_embeddings ${value} is refused at load, naming the key`, async () => {
      const dir = variant(`max-pos-${value}`, "hf-f32", (d) => editJson(join(d, "config.json"), (j) => (j.max_position_embeddings = value)));
      const error = await loadError(dir);
      expect(error).toBeInstanceOf(ModelConfigError);
      expect(error.message).toContain(`'max_position_embeddings' = ${value} is outside 1 to`);
    });
  }

  it("a config.json that is a symlink to /dev/zero is refused, not read forever", async () => {
    const dir = variant("config-dev-zero", "hf-f32", (d) => {
      rmSync(join(d, "config.json"));
      symlinkSync("/dev/zero", join(d, "config.json"));
      rmSync(join(d, "tokenizer_config.json")); // the tokenizer would refuse its own /dev/zero first
    });
    const mlx = new MlxBackend();
    const error = await mlx.load(dir).then(() => undefined, (e: unknown) => e as Error);
    expect(error).toBeDefined();
    expect(error!.message).toMatch(/config\.json: not a regular file/);
  });

  it("an integer beyond 32 bits is refused, not truncated", async () => {
    const dir = variant("hidden-2-32", "hf-f32", (d) => editJson(join(d, "config.json"), (j) => (j.hidden_size = 2 ** 32 + 64)));
    const error = await loadError(dir);
    expect(error).toBeInstanceOf(ModelConfigError);
    expect(error.message).toContain("'hidden_size' = 4294967360 does not fit a 32-bit integer");
  });

  it("safetensors: a repeated tensor name is refused", async () => {
    const dir = variant("duplicate-key", "hf-f32", (d) =>
      editSafetensorsHeader(join(d, "model.safetensors"), (h) => {
        const header = JSON.parse(h) as Record<string, unknown>;
        const entry = header["model.norm.weight"];
        return h.replace("{", `{"model.norm.weight":${JSON.stringify(entry)},`);
      }));
    const error = await loadError(dir);
    expect(error).toBeInstanceOf(ModelFormatError);
    expect(error.message).toContain("tensor 'model.norm.weight' appears twice in the safetensors header");
  });

  it("safetensors: overlapping tensor ranges are refused", async () => {
    const dir = variant("overlap", "hf-f32", (d) =>
      editSafetensorsHeader(join(d, "model.safetensors"), (h) => {
        const header = JSON.parse(h) as Record<string, { data_offsets: number[] }>;
        // Two [64] norms: the second now reads the first one's bytes.
        header["model.layers.1.input_layernorm.weight"]!.data_offsets = [...header["model.layers.0.input_layernorm.weight"]!.data_offsets];
        return JSON.stringify(header);
      }));
    const error = await loadError(dir);
    expect(error).toBeInstanceOf(ModelFormatError);
    expect(error.message).toMatch(/overlaps the tensor before it/);
  });
});

describe("hostile tokenizer.json", () => {
  it("a tokenizer.json that is a symlink to /dev/zero is refused, not read forever", async () => {
    const dir = variant("tokenizer-dev-zero", "hf-f32", (d) => {
      rmSync(join(d, "tokenizer.json"));
      symlinkSync("/dev/zero", join(d, "tokenizer.json"));
    });
    const error = await Tokenizer.fromDirectory(dir).then(() => undefined, (e: unknown) => e as MlxNodeError);
    expect(error?.code).toBe("TOKENIZER_ERROR");
    expect(error?.message).toMatch(/tokenizer\.json: not a regular file/);
  });

  // Both once loaded, then failed every request (found by the 1,000-mutation fuzz run, seed 7).
  it("a vocabulary id that is not an id, and a post-processor that drops every token, are refused at load", async () => {
    const badId = variant("tokenizer-bad-id", "hf-f32", (d) =>
      editJson(join(d, "tokenizer.json"), (j) => (((j.model as Record<string, unknown>).vocab as Record<string, unknown>)["▁a"] = "BPE")));
    const idError = await Tokenizer.fromDirectory(badId).then(() => undefined, (e: unknown) => e as MlxNodeError);
    expect(idError?.message).toContain('vocabulary entry "▁a" has id "BPE", not a token id');
    const empty = variant("tokenizer-empty-post", "hf-f32", (d) =>
      editJson(join(d, "tokenizer.json"), (j) => ((j.post_processor as Record<string, unknown>).single = [])));
    const emptyError = await Tokenizer.fromDirectory(empty).then(() => undefined, (e: unknown) => e as MlxNodeError);
    expect(emptyError?.code).toBe("TOKENIZER_ERROR");
    expect(emptyError?.message).toContain('it encodes "a" as []');
  });

  it("an unknown model type is refused at load, naming the type", async () => {
    const dir = variant("tokenizer-type", "hf-f32", (d) =>
      editJson(join(d, "tokenizer.json"), (j) => ((j.model as Record<string, unknown>).type = "Mystery")));
    const error = await Tokenizer.fromDirectory(dir).then(() => undefined, (e: unknown) => e as MlxNodeError);
    expect(error).toBeInstanceOf(MlxNodeError);
    expect(error?.code).toBe("TOKENIZER_ERROR");
    expect(error?.message).toContain('model type "Mystery" (supported: BPE, WordPiece, Unigram)');
  });
});
