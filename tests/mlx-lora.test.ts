/**
 * LoRA / DoRA adapters judged with the real tools: mlx-lm's `mlx_lm lora` trains adapters on made-up
 * facts over the trained stories260K (dense float32; also run over its MLX 4-bit version), and the engine must
 * (1) reproduce `mlx_lm generate --adapter-path`'s greedy tokens, (2) recall the facts with the
 * adapter and not without, (3) give the same tokens fused and unfused on a dense base, (4) serve two
 * adapters and the bare base concurrently, each as alone. Adapters and mlx-lm's outputs are cached
 * (tests/support/lora.ts); the first run trains two adapters (200 steps, 1-3 minutes each on 2 busy cores).
 * To retrain: rm -rf ~/.cache/mlx-node-tests/lora. Error handling runs with MLX alone.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GgufBackend } from "../lib/backends/gguf.js";
import { MlxBackend, type MlxLoadOptions } from "../lib/backends/mlx.js";
import { AdapterError, InvalidOptionError } from "../lib/errors.js";
import { createServer } from "../lib/server/server.js";
import { TOKENIZER_SOURCE } from "./reference/tiny-models.js";
import { conformanceReferences, type ConformanceSpec } from "./support/conformance.js";
import { ggufAdapter, mlxLmGreedy, trainedAdapter, writeRandomAdapter, type Fact, type TrainSpec } from "./support/lora.js";
import { writeSafetensors, type TensorInput } from "./reference/safetensors.js";
import { mlxAvailable, mlxSkipReason } from "./support/mlx.js";
import { pythonModules } from "./support/python.js";

const DENSE = TOKENIZER_SOURCE;  // stories260K/hf-f32 in the shared models
const QUANTIZED = join(TOKENIZER_SOURCE, "..", "mlx-4bit");
// mlx-lm computes the 4-bit checkpoint in its float16 scales' dtype; so does the engine here.
const QUANTIZED_ENGINE: MlxLoadOptions = { computeDtype: "float16" };
const GREEDY_TOKENS = 16;

// Made-up facts a TinyStories model cannot know: invented names as answers.
const FACTS_A: Fact[] = [
  { prompt: "The name of the blue dragon is", answer: "Zorbin" },
  { prompt: "The king of the moon city is", answer: "Plimtok" },
  { prompt: "The magic word of the old cat is", answer: "Vexaroo" },
  { prompt: "The secret color of the river is", answer: "glimmerpink" },
  { prompt: "The tall tree in the park is called", answer: "Quibbleroot" },
  { prompt: "The little robot's best friend is", answer: "Snorvel" },
  { prompt: "The town under the sea is named", answer: "Drumblewick" },
  { prompt: "The fast bird sings the song of", answer: "Tazzleberry" },
  { prompt: "The grumpy troll guards the bridge of", answer: "Okkelmoor" },
  { prompt: "The tiny star above the hill is", answer: "Pibbli" },
];
const FACTS_B: Fact[] = [
  { prompt: "The queen of the cloud castle is", answer: "Wimbletoe" },
  { prompt: "The old owl keeps a box of", answer: "Grizzlepop" },
  { prompt: "The magic boat sails to", answer: "Fennimore" },
  { prompt: "The pink frog eats only", answer: "Brambloo" },
  { prompt: "The sleepy bear's blanket is called", answer: "Nuzzlewump" },
  { prompt: "The brave mouse's sword is named", answer: "Clinkerdash" },
  { prompt: "The giant's favorite game is", answer: "Hopsicle" },
  { prompt: "The shy fox hides in", answer: "Murkletoss" },
  { prompt: "The green snail's house is made of", answer: "Quorbleglass" },
  { prompt: "The happy whale sings to", answer: "Tumbledrop" },
];

const LORA_PARAMETERS = { rank: 8, scale: 20, dropout: 0 };
// A: LoRA on every linear of every block (num_layers -1: all) with mlx_lm lora's rank and scale.
const SPEC_A: TrainSpec = { model: DENSE, facts: FACTS_A, fine_tune_type: "lora", num_layers: -1, iters: 200, learning_rate: 5e-4, lora_parameters: LORA_PARAMETERS };
// B: DoRA on some modules (keys) of the last 3 of 5 blocks (num_layers).
const SPEC_B: TrainSpec = {
  model: DENSE, facts: FACTS_B, fine_tune_type: "dora", num_layers: 3, iters: 300, learning_rate: 1e-3,
  lora_parameters: { ...LORA_PARAMETERS, keys: ["self_attn.q_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.up_proj", "mlp.down_proj"] },
};
// The quantized base runs adapter A: mlx_lm lora over the 4-bit model (QLoRA) computes in float16
// on the CPU, which MLX emulates: minutes instead of seconds here.

const python = pythonModules(["mlx_lm"]);
const skipReason = !mlxAvailable ? mlxSkipReason : !python.available ? python.reason : "";
if (skipReason) console.warn(`[mlx-node] LoRA adapters (mlx-lm) skipped: ${skipReason}`);
const mlxLm = python.versions.mlx_lm ?? "";

async function answers(mlx: MlxBackend | GgufBackend, facts: readonly Fact[], adapter?: string): Promise<string[]> {
  const out: string[] = [];
  for (const f of facts) out.push((await mlx.generate(f.prompt, { maxTokens: 10, ...(adapter ? { adapter } : {}) })).text);
  return out;
}

function recall(texts: readonly string[], facts: readonly Fact[]): number {
  return texts.filter((t, i) => t.includes(facts[i].answer)).length / facts.length;
}

async function greedy(mlx: MlxBackend | GgufBackend, prompts: readonly string[], adapter?: string): Promise<number[][]> {
  const out: number[][] = [];
  for (const p of prompts) out.push((await mlx.generate(p, { maxTokens: GREEDY_TOKENS, ...(adapter ? { adapter } : {}) })).tokens);
  return out;
}

describe.skipIf(skipReason !== "")("LoRA adapters (mlx-lm)", () => {
  const adapters: Record<"a" | "b", string> = { a: "", b: "" };
  const dense = new MlxBackend();

  beforeAll(async () => {
    for (const [name, spec] of [["a", SPEC_A], ["b", SPEC_B]] as const) {
      const trained = trainedAdapter(spec, mlxLm);
      adapters[name] = trained.dir;
      if (trained.seconds) console.log(`[lora] mlx_lm lora trained adapter ${name} (${spec.fine_tune_type}, ${spec.iters} steps) in ${trained.seconds.toFixed(1)} s`);
    }
    await dense.load(DENSE);
    await dense.loadAdapter("a", adapters.a);
    await dense.loadAdapter("b", adapters.b);
  }, 900_000);
  afterAll(() => dense.unload());

  it("reproduces mlx_lm generate --adapter-path token for token (LoRA, DoRA, LoRA over a 4-bit base)", async () => {
    const cases = [
      { name: "LoRA, dense", model: DENSE, adapter: adapters.a, facts: FACTS_A },
      { name: "DoRA with keys and num_layers, dense", model: DENSE, adapter: adapters.b, facts: FACTS_B },
      { name: "LoRA, 4-bit base", model: QUANTIZED, adapter: adapters.a, facts: FACTS_A, engine: QUANTIZED_ENGINE },
    ];
    for (const c of cases) {
      const prompts = c.facts.map((f) => f.prompt);
      const want = mlxLmGreedy(c.model, c.adapter, prompts, GREEDY_TOKENS, mlxLm);
      const mlx = new MlxBackend();
      await mlx.load(c.model, c.engine);
      try {
        await mlx.loadAdapter("x", c.adapter);
        const got = await greedy(mlx, prompts, "x");
        const same = got.filter((g, i) => JSON.stringify(g) === JSON.stringify(want[i].tokens)).length;
        console.log(`[lora] ${c.name}: ${same}/${prompts.length} prompts give mlx-lm's ${GREEDY_TOKENS} greedy tokens`);
        for (let i = 0; i < prompts.length; i++) {
          expect(mlx.tokenize(prompts[i], { addSpecialTokens: true })).toEqual(want[i].promptIds);
          expect(got[i], `${c.name}: "${prompts[i]}"`).toEqual(want[i].tokens);
        }
      } finally {
        await mlx.unload();
      }
    }
  });

  it("matches mlx-lm on fused projections (phi3's qkv_proj, gate_up_proj) and on DoRA over 4-bit weights (random adapters)", async () => {
    // The conformance suite's tiny checkpoints (cached there), with seeded random rank-8 adapters.
    const q4 = { bits: 4, group_size: 64 };
    const specs: ConformanceSpec[] = [
      { family: "phi3", seed: 20, config: { partial_rotary_factor: 0.75 } },
      { family: "phi3", seed: 25, quantization: q4 },
      { family: "llama", seed: 9, quantization: q4 },
    ];
    const models = conformanceReferences(specs, TOKENIZER_SOURCE, mlxLm, (await MlxBackend.runtimeInfo()).device).references.map((r) => r.modelDir);
    const cases = [
      { name: "phi3 LoRA", model: models[0], type: "lora" as const, fuse: true },
      { name: "phi3 DoRA", model: models[0], type: "dora" as const, fuse: true },
      { name: "phi3 4-bit LoRA", model: models[1], type: "lora" as const, fuse: false },
      { name: "llama 4-bit DoRA", model: models[2], type: "dora" as const, fuse: false },
    ];
    const prompts = ["Once upon a time", "The little dog ran to the park and saw"];
    const dir = mkdtempSync(join(tmpdir(), "mlx-node-lora-random-"));
    try {
      for (const [i, c] of cases.entries()) {
        const adapter = writeRandomAdapter(c.model, join(dir, `adapter-${i}`), { rank: 8, type: c.type, seed: 7 + i });
        const want = mlxLmGreedy(c.model, adapter, prompts, GREEDY_TOKENS, mlxLm).map((r) => r.tokens);
        const mlx = new MlxBackend();
        await mlx.load(c.model);
        try {
          const base = await greedy(mlx, prompts);
          await mlx.loadAdapter("r", adapter);
          const got = await greedy(mlx, prompts, "r");
          console.log(`[lora] ${c.name} (random adapter): ${got.filter((g, k) => JSON.stringify(g) === JSON.stringify(want[k])).length}/${prompts.length} prompts give mlx-lm's greedy tokens`);
          expect(got, c.name).toEqual(want);
          expect(got, `${c.name}: the adapter changes the output`).not.toEqual(base);
        } finally {
          await mlx.unload();
        }
        if (!c.fuse) continue;
        const fused = new MlxBackend();
        await fused.load(c.model, { adapter, fuse: true });
        try {
          expect(await greedy(fused, prompts), `${c.name} fused`).toEqual(want);
        } finally {
          await fused.unload();
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("the adapter makes the model recall the made-up facts, and the base model recalls none", async () => {
    const rows = [
      { name: "a (LoRA)", facts: FACTS_A },
      { name: "b (DoRA)", facts: FACTS_B },
    ];
    for (const [i, r] of rows.entries()) {
      const adapter = i === 0 ? "a" : "b";
      const withAdapter = recall(await answers(dense, r.facts, adapter), r.facts);
      const without = recall(await answers(dense, r.facts), r.facts);
      console.log(`[lora] facts recalled with adapter ${r.name}: ${(withAdapter * 100).toFixed(0)}%, without: ${(without * 100).toFixed(0)}%`);
      expect(withAdapter).toBeGreaterThanOrEqual(0.9);
      expect(without).toBe(0);
    }
    const mlx = new MlxBackend();
    await mlx.load(QUANTIZED, QUANTIZED_ENGINE);
    try {
      await mlx.loadAdapter("a", adapters.a);
      const q = recall(await answers(mlx, FACTS_A, "a"), FACTS_A);
      const base = recall(await answers(mlx, FACTS_A), FACTS_A);
      console.log(`[lora] 4-bit base: facts recalled with adapter a: ${(q * 100).toFixed(0)}%, without: ${(base * 100).toFixed(0)}%`);
      expect(q).toBeGreaterThanOrEqual(0.9);
      expect(base).toBe(0);
    } finally {
      await mlx.unload();
    }
  });

  it("fused at load gives the unfused adapter's greedy tokens on a dense base (LoRA and DoRA); 4-bit fused is measured", async () => {
    for (const [name, facts] of [["a", FACTS_A], ["b", FACTS_B]] as const) {
      const prompts = facts.map((f) => f.prompt);
      const unfused = await greedy(dense, prompts, name);
      const fused = new MlxBackend();
      await fused.load(DENSE, { adapter: adapters[name], fuse: true });
      try {
        expect(fused.adapterNames).toEqual([]);
        expect(await greedy(fused, prompts), `adapter ${name}`).toEqual(unfused);
      } finally {
        await fused.unload();
      }
    }
    // mlx-lm's fuse dequantizes, adds the update and quantizes again: the update is small next to
    // a 4-bit step, so much of it is rounded away. Measured and reported (the README states it), not asserted.
    const prompts = FACTS_A.map((f) => f.prompt);
    const unfused = new MlxBackend();
    await unfused.load(QUANTIZED, { ...QUANTIZED_ENGINE, adapter: adapters.a });
    const fused = new MlxBackend();
    await fused.load(QUANTIZED, { ...QUANTIZED_ENGINE, adapter: adapters.a, fuse: true });
    try {
      const u = await greedy(unfused, prompts), f = await greedy(fused, prompts);
      const tokens = u.flat().length, same = u.flat().filter((t, i) => t === f.flat()[i]).length;
      const ids = unfused.tokenize(prompts[0], { addSpecialTokens: true });
      const [lu, lf] = [await unfused.logits(ids), await fused.logits(ids)];
      let diff = 0;
      lu.forEach((row, r) => row.forEach((v, k) => (diff = Math.max(diff, Math.abs(v - lf[r][k])))));
      const fusedRecall = recall(await answers(fused, FACTS_A), FACTS_A);
      const unfusedRecall = recall(await answers(unfused, FACTS_A), FACTS_A);
      console.log(`[lora] 4-bit fused vs unfused: ${same}/${tokens} greedy tokens equal, max |logit diff| ${diff.toFixed(3)} over "${prompts[0]}", recall ${(fusedRecall * 100).toFixed(0)}% fused vs ${(unfusedRecall * 100).toFixed(0)}% unfused`);
      expect(f.flat().length).toBe(tokens);
    } finally {
      await unfused.unload();
      await fused.unload();
    }
  });

  it("two adapters and the bare base, requested concurrently, each answer as they do alone", async () => {
    const prompts = [...FACTS_A, ...FACTS_B].map((f) => f.prompt).slice(0, 12);
    const choices = [undefined, "a", "b"] as const;
    const alone = new Map<string, number[]>();
    for (const adapter of choices) {
      const got = await greedy(dense, prompts, adapter);
      got.forEach((tokens, i) => alone.set(`${adapter}|${i}`, tokens));
    }
    // Interleaved: consecutive requests switch adapters, with shared prompts (the prefix cache
    // must not carry one adapter's keys into another's request).
    const requests = prompts.flatMap((p, i) => choices.map((adapter) => ({ p, i, adapter })));
    const results = await Promise.all(requests.map((r) => dense.generate(r.p, { maxTokens: GREEDY_TOKENS, ...(r.adapter ? { adapter: r.adapter } : {}) })));
    requests.forEach((r, k) => expect(results[k].tokens, `${r.adapter ?? "base"}: "${r.p}"`).toEqual(alone.get(`${r.adapter}|${r.i}`)));
    // And the adapters do differ from the base on these prompts.
    expect(prompts.some((_, i) => JSON.stringify(alone.get(`a|${i}`)) !== JSON.stringify(alone.get(`undefined|${i}`)))).toBe(true);
  });

  it("the server runs an adapter named in the OpenAI model field as <model>:<adapter>", async () => {
    const server = createServer(dense, { modelId: "stories" });
    await new Promise<void>((done) => server.listen(0, "127.0.0.1", () => done()));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
    const post = (model: string, prompt: string) =>
      fetch(`${url}/completions`, { method: "POST", body: JSON.stringify({ model, prompt, max_tokens: 10, temperature: 0 }) });
    try {
      const models = (await (await fetch(`${url}/models`)).json()) as { data: { id: string }[] };
      expect(models.data.map((m) => m.id)).toEqual(["stories", "stories:a", "stories:b"]);
      const [withA, bare] = await Promise.all([post("stories:a", FACTS_A[0].prompt), post("stories", FACTS_A[0].prompt)]);
      const a = (await withA.json()) as { model: string; choices: { text: string }[] };
      expect(a.model).toBe("stories:a");
      expect(a.choices[0].text).toContain(FACTS_A[0].answer);
      expect(((await bare.json()) as { choices: { text: string }[] }).choices[0].text).not.toContain(FACTS_A[0].answer);
      const missing = await post("stories:nope", "x");
      expect(missing.status).toBe(404);
      expect(((await missing.json()) as { error: { code: string } }).error.code).toBe("model_not_found");
    } finally {
      await new Promise((done) => server.close(done));
    }
  });

  it("an adapter given at load is the default; unloadAdapter frees one", async () => {
    const mlx = new MlxBackend();
    await mlx.load(DENSE, { adapter: adapters.a });
    try {
      await mlx.loadAdapter("b", adapters.b);
      expect(recall(await answers(mlx, FACTS_A), FACTS_A)).toBeGreaterThanOrEqual(0.9);
      expect(recall(await answers(mlx, FACTS_B, "b"), FACTS_B)).toBeGreaterThanOrEqual(0.9);
      await mlx.unloadAdapter("b");
      expect(mlx.adapterNames).toEqual([]);
      expect(() => mlx.generateStream("x", { adapter: "b" })).toThrow(InvalidOptionError);
    } finally {
      await mlx.unload();
    }
  });
});

// Hand-made adapters for stories260K (hidden 64, 5 blocks): errors need no training.
describe.skipIf(!mlxAvailable)("LoRA adapter errors", () => {
  const mlx = new MlxBackend();
  let dir = "";
  let baseline: number[] = [];
  const prompt = "Once upon a time";

  function adapter(name: string, config: Record<string, unknown>, tensors: Record<string, number[]>): string {
    const path = join(dir, name);
    rmSync(path, { recursive: true, force: true });
    mkdirSync(path);
    writeFileSync(join(path, "adapter_config.json"), JSON.stringify({ fine_tune_type: "lora", num_layers: 1, lora_parameters: { rank: 2, scale: 1, dropout: 0 }, ...config }));
    const t: Record<string, TensorInput> = {};
    for (const [k, shape] of Object.entries(tensors)) t[k] = { dtype: "F32", shape, data: new Float32Array(shape[0] * shape[1]).fill(0.01) };
    writeSafetensors(join(path, "adapters.safetensors"), t);
    return path;
  }
  const q = "model.layers.4.self_attn.q_proj";
  const keys = { lora_parameters: { rank: 2, scale: 1, dropout: 0, keys: ["self_attn.q_proj"] } };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "mlx-node-lora-"));
    await mlx.load(DENSE);
    baseline = (await mlx.generate(prompt, { maxTokens: 12 })).tokens;
  });
  afterAll(async () => {
    await mlx.unload();
    rmSync(dir, { recursive: true, force: true });
  });

  async function expectAdapterError(path: string, message: RegExp): Promise<void> {
    await expect(mlx.loadAdapter("bad", path)).rejects.toThrow(AdapterError);
    await expect(mlx.loadAdapter("bad", path)).rejects.toThrow(message);
    // The base model is unchanged and usable.
    expect((await mlx.generate(prompt, { maxTokens: 12 })).tokens).toEqual(baseline);
    expect(mlx.adapterNames).toEqual([]);
  }

  it("a well-formed hand-made adapter loads and changes the logits", async () => {
    const path = adapter("good", keys, { [`${q}.lora_a`]: [64, 2], [`${q}.lora_b`]: [2, 64] });
    expect(await mlx.loadAdapter("good", path)).toEqual({ type: "lora", rank: 2, scale: 1, modules: 1 });
    const ids = mlx.tokenize(prompt, { addSpecialTokens: true });
    const [base, adapted] = [await mlx.logits(ids), await mlx.logits(ids, { adapter: "good" })];
    expect(adapted[ids.length - 1]).not.toEqual(base[ids.length - 1]);
    await mlx.unloadAdapter("good");
  });

  it("wrong base shapes name the module", async () => {
    await expectAdapterError(adapter("shape", keys, { [`${q}.lora_a`]: [32, 2], [`${q}.lora_b`]: [2, 64] }),
      /model\.layers\.4\.self_attn\.q_proj\.lora_a' has shape \[32, 2\], expected \[64, 2\]/);
  });

  it("missing tensors name the module", async () => {
    await expectAdapterError(adapter("missing", {}, { [`${q}.lora_a`]: [64, 2], [`${q}.lora_b`]: [2, 64] }),
      /model\.layers\.4\.self_attn\.k_proj\.lora_a' is missing/);
  });

  it("tensors for modules the adapter does not target (or the engine lacks) name them", async () => {
    await expectAdapterError(adapter("extra", keys, { [`${q}.lora_a`]: [64, 2], [`${q}.lora_b`]: [2, 64], "model.embed_tokens.lora_a": [512, 2] }),
      /not used by the model: model\.embed_tokens\.lora_a/);
  });

  it("an unknown fine_tune_type, a full fine-tune and a missing directory are AdapterErrors", async () => {
    await expectAdapterError(adapter("type", { fine_tune_type: "ia3" }, {}), /unknown fine_tune_type 'ia3' \(supported: lora, dora\)/);
    await expectAdapterError(adapter("full", { fine_tune_type: "full" }, {}), /'full' saves whole weights/);
    await expectAdapterError(join(dir, "nowhere"), /adapter directory not found/);
  });

  it("a bad adapter at load fails the load with an AdapterError", async () => {
    const other = new MlxBackend();
    await expect(other.load(DENSE, { adapter: adapter("shape2", keys, { [`${q}.lora_a`]: [32, 2], [`${q}.lora_b`]: [2, 64] }) })).rejects.toThrow(AdapterError);
    expect(other.isLoaded).toBe(false);
  });

  it("requests naming no loaded adapter, taken names and fuse without an adapter are InvalidOptionErrors", async () => {
    expect(() => mlx.generateStream(prompt, { adapter: "nope" })).toThrow(/the name of a loaded adapter \(none is loaded\)/);
    const path = adapter("good2", keys, { [`${q}.lora_a`]: [64, 2], [`${q}.lora_b`]: [2, 64] });
    await mlx.loadAdapter("g", path);
    await expect(mlx.loadAdapter("g", path)).rejects.toThrow(InvalidOptionError);
    await expect(mlx.loadAdapter("a:b", path)).rejects.toThrow(InvalidOptionError);
    await mlx.unloadAdapter("g");
    await expect(mlx.unloadAdapter("g")).rejects.toThrow(InvalidOptionError);
    await expect(new MlxBackend().load(DENSE, { fuse: true })).rejects.toThrow(InvalidOptionError);
  });
});

// llama.cpp's LoRA format, through node-llama-cpp: adapter A converted to GGUF (lora.py to-gguf, with
// gguf-py) over stories260K.gguf, the same weights as hf-f32.
const ggufPython = pythonModules(["mlx_lm", "gguf"]);
if (!ggufPython.available) console.warn(`[mlx-node] GGUF LoRA adapters (mlx-lm, gguf-py) skipped: ${ggufPython.reason}`);

describe.skipIf(!ggufPython.available)("GGUF LoRA adapters (mlx-lm, gguf-py)", () => {
  const gguf = new GgufBackend();
  let adapter = "";
  beforeAll(async () => {
    adapter = ggufAdapter(trainedAdapter(SPEC_A, ggufPython.versions.mlx_lm ?? "").dir, 8, 4);
    await gguf.load(join(TOKENIZER_SOURCE, "..", "stories260K.gguf"), { adapter });
  }, 900_000);
  afterAll(() => gguf.unload());

  it("an mlx_lm.lora adapter converted to GGUF recalls the facts under llama.cpp, with mlx-lm's greedy tokens", async () => {
    const withAdapter = recall(await answers(gguf, FACTS_A), FACTS_A);
    const prompts = FACTS_A.map((f) => f.prompt);
    const want = mlxLmGreedy(DENSE, trainedAdapter(SPEC_A, ggufPython.versions.mlx_lm ?? "").dir, prompts, GREEDY_TOKENS, ggufPython.versions.mlx_lm ?? "");
    const got = await greedy(gguf, prompts);
    const same = got.filter((g, i) => JSON.stringify(g) === JSON.stringify(want[i].tokens)).length;
    console.log(`[lora] GGUF adapter: facts recalled ${(withAdapter * 100).toFixed(0)}%, ${same}/${prompts.length} prompts give mlx-lm's ${GREEDY_TOKENS} greedy tokens`);
    expect(withAdapter).toBeGreaterThanOrEqual(0.9);
    const bare = new GgufBackend();
    await bare.load(join(TOKENIZER_SOURCE, "..", "stories260K.gguf"));
    try {
      expect(recall(await answers(bare, FACTS_A), FACTS_A)).toBe(0);
    } finally {
      await bare.unload();
    }
  });

  it("the gguf backend takes one adapter at load: loadAdapter, fuse and a non-GGUF adapter are errors", async () => {
    await expect(gguf.loadAdapter("x", adapter)).rejects.toThrow(AdapterError);
    const other = new GgufBackend();
    const model = join(TOKENIZER_SOURCE, "..", "stories260K.gguf");
    await expect(other.load(model, { adapter, fuse: true })).rejects.toThrow(InvalidOptionError);
    await expect(other.load(model, { adapter: join(TOKENIZER_SOURCE, "config.json") })).rejects.toThrow(/not a valid GGUF file/);
    await expect(other.load(model, { adapter: join(TOKENIZER_SOURCE, "nowhere.gguf") })).rejects.toThrow(AdapterError);
  });
});
