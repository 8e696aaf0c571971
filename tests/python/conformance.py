"""mlx-lm conformance references: tiny random checkpoints built, saved and run by mlx-lm itself.

Usage:  python3 conformance.py CASES.json OUT_DIR TOKENIZER_DIR DEVICE
        python3 conformance.py --version          (prints the mlx-lm version the references depend on)

DEVICE (cpu or gpu) is where mlx-lm runs: the engine's device, so both sides use the same kernels.
CASES.json is a JSON list of case specs; each case is written to OUT_DIR/<key>/ where <key> is the
case's "key" (the caller's cache key, e.g. a hash of the spec). A case whose OUT_DIR/<key>/reference.json
exists is skipped, so a run only fills what is missing. The generator is generic: a case is data.

Case spec (every field but "family" optional):
  key           str   folder name under OUT_DIR (required)
  family        str   model_type: llama, mistral, qwen2, qwen3, phi3, gemma, gemma2, gemma3_text, gemma3 have
                      tiny base configs (BASE); another model_type mlx-lm has takes COMMON plus "config"
  config        dict  config.json keys laid over the family's tiny base config (BASE below); for
                      gemma3 they go into text_config
  dtype         str   float32 | float16 | bfloat16: the checkpoint's float dtype, cast as mlx_lm.convert does
  quantization  dict  {"bits": 4|8|..., "group_size": 32|64|128, "mode": "affine"|"mxfp4"|"mxfp8"|"nvfp4", "overrides": {path: {"bits", "group_size"} | false},
                       "recipe": "mixed_3_6" | ...}
                      quantized through mlx_lm.utils.quantize_model; an override is returned by the quant
                      predicate for the module at exactly that path (mlx-lm then records it per layer in
                      config.json's "quantization", as mixed-precision conversions do); false leaves it float.
                      A recipe takes mlx_lm.convert's predicate of that name (mlx_lm.convert --quant-predicate)
  seed          int   seeds the random weights (mx.random)
  extra_tensors dict  {name: shape}: random tensors added to the saved file that mlx-lm's sanitize must drop
                      (e.g. a multimodal checkpoint's vision tower)
  patches       list  names of DELIBERATE divergences (PATCHES below) applied to mlx-lm's loaded model to get
                      the reference the engine must match; the plain mlx-lm result is recorded beside it
  prompt_length int   default 64;  generate  int  greedy tokens, default 32
  split_experts dict  {switch_mlp projection: per-expert name}, e.g. {"gate_proj": "w1", ...}: the stacked expert
                      tensors are saved per expert as HF checkpoints have them (mlx-lm's sanitize restacks them)
  fuse_experts  bool  the stacked experts saved as HF's Qwen3.5-MoE checkpoints hold them: one experts.gate_up_proj
                      [E, 2 x inter, hidden] (gate rows first) and one experts.down_proj per layer (mlx-lm's sanitize splits them); one shard
  shard_bytes   int   save_model writes shards of at most this many bytes (model-0000N-of-0000M.safetensors)
  checkpoint    str   a model directory to run instead of building one (its files are copied into the case's
                      model/ folder; family, config, dtype, quantization and seed are then not used)
  engine        dict  not read here: the engine's load options for this case (the test's business)

Output per case: model/ (config.json and model.safetensors as mlx-lm's save_config/save_model write them,
plus tokenizer.json, tokenizer_config.json and special_tokens_map.json copied from TOKENIZER_DIR, which
mlx-node's loader needs; mlx-lm is fed token ids and never reads them), and reference.json:
  {"mlx_lm": version, "prompt": [...], "vocab_size": V, "greedy": [...32 ids],
   "logits": "logits.f32", "rows": R, "plain": {...same for unpatched mlx-lm, when patched}}
logits.f32 is little-endian float32 [R, V], R = prompt_length + generate - 1: rows 0..P-1 are mlx-lm's
logits for every prompt position from one forward pass over the prompt (no cache); row P-1+i (i >= 1) is
the logits mlx-lm's generate_step computed, through its KV cache, for greedy token i. So the engine's one
uncached forward over prompt + greedy[:-1] is compared with mlx-lm's prefill and its cached decode.

mlx-lm is used for everything it has: its model classes (mlx_lm.utils._get_classes), its dtype cast
(convert's set_dtype and the model's cast_predicate), quantize_model, save_model, save_config, then
load_model from disk (sanitize, per-layer quantization), the model's forward and generate_step.
"""
import json
import math
import shutil
import sys
from contextlib import ExitStack, contextmanager, redirect_stdout
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_map_with_path

import mlx_lm
from mlx_lm.convert import mixed_quant_predicate_builder
from mlx_lm.generate import generate_step
from mlx_lm.utils import _get_classes, load_model, quantize_model, save_config, save_model

# The tokenizer files copied beside each checkpoint (our loader reads tokenizer.json); the tests use
# stories260K's, whose vocabulary (512) is the tiny models'.
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
VOCAB = 512

# Tiny configs: hidden 64, 4 query heads over 2 KV heads, 3 layers. Keys as HF writes them.
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=2048, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
              hidden_act="silu", rope_theta=10000.0, tie_word_embeddings=False)
BASE = {
    "llama": dict(architectures=["LlamaForCausalLM"], attention_bias=False, mlp_bias=False),
    "mistral": dict(architectures=["MistralForCausalLM"], rope_theta=1e6, head_dim=16, sliding_window=None),
    "qwen2": dict(architectures=["Qwen2ForCausalLM"], rope_theta=1e6, rms_norm_eps=1e-6, use_sliding_window=False,
                  sliding_window=32768, max_window_layers=3),
    "qwen3": dict(architectures=["Qwen3ForCausalLM"], rope_theta=1e6, rms_norm_eps=1e-6, head_dim=32, attention_bias=False),
    "phi3": dict(architectures=["Phi3ForCausalLM"], original_max_position_embeddings=2048, partial_rotary_factor=1.0),
    "gemma": dict(architectures=["GemmaForCausalLM"], head_dim=32, hidden_act="gelu", hidden_activation="gelu_pytorch_tanh",
                  tie_word_embeddings=True),
    "gemma2": dict(architectures=["Gemma2ForCausalLM"], head_dim=32, query_pre_attn_scalar=24, attn_logit_softcapping=50.0,
                   final_logit_softcapping=30.0, hidden_activation="gelu_pytorch_tanh", sliding_window=4096,
                   tie_word_embeddings=True),
    "gemma3_text": dict(architectures=["Gemma3ForCausalLM"], head_dim=32, query_pre_attn_scalar=24, sliding_window=8,
                        sliding_window_pattern=2, rope_theta=1e6, rope_local_base_freq=10000.0,
                        hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True),
}
BASE["gemma3"] = BASE["gemma3_text"]
GEMMA = ("gemma", "gemma2", "gemma3_text", "gemma3")  # norms stored as w - 1 (they scale by 1 + w)
SCALED_EMBEDDINGS = GEMMA + ("gemma4_text", "gemma4")  # embeddings times sqrt(hidden_size), tied head


def build_config(case):
    family = case["family"]
    text = {**COMMON, **BASE.get(family, {}), "model_type": family, **case.get("config", {})}
    text["torch_dtype"] = case.get("dtype", "float32")
    if family != "gemma3":
        return text
    # A multimodal Gemma 3 checkpoint: the text model's keys under text_config, as HF writes it.
    text["model_type"] = "gemma3_text"
    return {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "vocab_size": text.pop("vocab_size"),
            "text_config": text, "torch_dtype": text["torch_dtype"]}


def randomize(model, family, seed):
    """Random weights at scales that keep a 3-layer model's greedy output varied (not one repeated token)."""
    mx.random.seed(seed)
    gemma, scaled = family in GEMMA, family in SCALED_EMBEDDINGS
    hidden = COMMON["hidden_size"]

    def init(path, p):
        name = path.split(".")[-2] if path.endswith(".weight") else ""
        if path.endswith("bias"):
            return 0.1 * mx.random.normal(p.shape)
        if p.ndim == 1:  # norm gains; Gemma's are stored as w - 1 (its norms scale by 1 + w)
            # Gemma's tied head is its small input embedding: a final gain of 4 spreads its logits.
            gain = 4.0 if scaled and path.endswith("model.norm.weight") else 1.0
            return gain - (1.0 if gemma else 0.0) + 0.15 * mx.random.normal(p.shape)
        if "embed_tokens" in path:
            # Scaled by sqrt(hidden) in the model: drawn that much smaller, so the input token does not
            # dominate the residual stream (the model would echo its input).
            return (0.3 / math.sqrt(hidden) if scaled else 0.3) * mx.random.normal(p.shape)
        gain = 1.6 if name in ("o_proj", "down_proj") else 1.2
        return gain / math.sqrt(p.shape[-1]) * mx.random.normal(p.shape)

    model.update(tree_map_with_path(init, model.parameters()))
    mx.eval(model.parameters())


def drop_tied_head(model, config):
    """gemma3_text always builds an lm_head; a tied checkpoint is one saved without it (sanitize re-ties)."""
    text = config.get("text_config", config)
    if config["model_type"] in ("gemma3_text", "gemma3") and text.get("tie_word_embeddings", True):
        inner = model.language_model if hasattr(model, "language_model") else model
        inner.pop("lm_head")


def cast(model, dtype):
    """mlx_lm.convert's dtype step, unchanged in substance: floating parameters the model allows are cast."""
    dt = getattr(mx, dtype)
    keep = getattr(model, "cast_predicate", lambda _: True)
    model.update(tree_map_with_path(lambda k, v: v.astype(dt) if keep(k) and mx.issubdtype(v.dtype, mx.floating) else v,
                                    model.parameters()))


@contextmanager
def shard_limit(limit):
    """save_model with shards of at most `limit` bytes (mlx-lm's make_shards takes whole GB)."""
    import mlx_lm.utils as utils
    if not limit:
        yield
        return
    original = utils.make_shards

    def make_shards(weights, max_file_size_gb=5):
        shards, current, size = [], {}, 0
        for name, value in weights.items():
            if current and size + value.nbytes > limit:
                shards.append(current)
                current, size = {}, 0
            current[name] = value
            size += value.nbytes
        return shards + [current] if current else shards

    utils.make_shards = make_shards
    try:
        yield
    finally:
        utils.make_shards = original


def rewrite_weights(out, edit):
    """Rewrites each saved shard with edit(weights, first_shard) and the index to match."""
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    weight_map = {}
    for file in files:
        weights = edit(mx.load(str(out / file)), file == files[0])
        mx.eval(weights)  # read the whole file before it is rewritten
        mx.save_safetensors(str(out / file), weights, metadata={"format": "mlx"})
        weight_map.update({name: file for name in weights})
    index["weight_map"] = dict(sorted(weight_map.items()))
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=4))


def rewrite_experts(weights, place):
    """Every tensor but the stacked experts <p>.switch_mlp.<proj>.<kind> [E, ...], which place(out, p, proj, kind, value)
    writes into `out` in another checkpoint's layout (mlx-lm's sanitize folds each back)."""
    out = {}
    for name, value in weights.items():
        if ".switch_mlp." not in name:
            out[name] = value
            continue
        prefix, rest = name.split(".switch_mlp.")
        proj, kind = rest.split(".")
        place(out, prefix, proj, kind, value)
    return out


def split_experts(weights, names):
    """HF's per-expert layout: <p>.experts.<e>.<names[proj]>.<kind>."""
    def place(out, prefix, proj, kind, value):
        for e in range(value.shape[0]):
            out[f"{prefix}.experts.{e}.{names[proj]}.{kind}"] = value[e]
    return rewrite_experts(weights, place)


def fuse_experts(weights):
    """HF's Qwen3.5-MoE layout: <p>.experts.gate_up_proj (gate rows, then up rows) and <p>.experts.down_proj."""
    def place(out, prefix, proj, kind, value):
        if proj == "gate_proj":
            out[f"{prefix}.experts.gate_up_proj"] = mx.concatenate([value, weights[f"{prefix}.switch_mlp.up_proj.{kind}"]], axis=1)
        elif proj == "down_proj":
            out[f"{prefix}.experts.down_proj"] = value
    return rewrite_experts(weights, place)


def build_checkpoint(case, out, tokenizer_dir):
    if "checkpoint" in case:
        out.mkdir(parents=True)
        for f in Path(case["checkpoint"]).iterdir():
            if f.is_file():
                shutil.copyfile(f, out / f.name)  # the contents only: sources may be read-only
        return
    config = build_config(case)
    model_class, args_class = _get_classes(config)
    model = model_class(args_class.from_dict(json.loads(json.dumps(config))))  # a copy: gemma3's args edit text_config
    drop_tied_head(model, config)
    randomize(model, case["family"], case.get("seed", 0))
    cast(model, case.get("dtype", "float32"))
    q = case.get("quantization")
    if q:
        overrides = q.get("overrides", {})
        recipe = mixed_quant_predicate_builder(q["recipe"], model, q["group_size"]) if "recipe" in q else None

        def predicate(path, module):
            if path in overrides:
                return overrides[path]
            return recipe(path, module) if recipe else True

        model, config = quantize_model(model, config, q["group_size"], q["bits"], mode=q.get("mode", "affine"),
                                       quant_predicate=predicate)
    with shard_limit(case.get("shard_bytes")):
        save_model(out, model)
    save_config(config, out / "config.json")
    # save_model writes an index even for one file; our loader and mlx-lm both read model*.safetensors.
    extra = case.get("extra_tensors")
    if extra:
        rewrite_weights(out, lambda w, first: {**w, **({name: mx.random.normal(shape).astype(getattr(mx, case.get("dtype", "float32")))
                                                        for name, shape in extra.items()} if first else {})})
    if case.get("fuse_experts"):
        rewrite_weights(out, lambda w, _: fuse_experts(w))
    split = case.get("split_experts")
    if split:
        rewrite_weights(out, lambda w, _: split_experts(w, split))
    for f in TOKENIZER_FILES:
        shutil.copy(tokenizer_dir / f, out / f)


# ---- deliberate divergences ---------------------------------------------------------------------
# Each patch makes mlx-lm's loaded model compute what HF transformers' original modelling does where
# mlx-node follows HF and mlx-lm does not. The engine must match the patched model to the float32 bound;
# the plain mlx-lm result is recorded too, so the test shows the divergence is real.

class _GeluTanhMLP(nn.Module):
    def __call__(self, x):
        return self.down_proj(nn.gelu_approx(self.gate_proj(x)) * self.up_proj(x))


@contextmanager
def gemma_gelu_tanh(model, config):
    """HF Gemma: hidden_act "gelu" is legacy for gelu_pytorch_tanh (configuration_gemma.py); mlx-lm uses erf gelu."""
    original = [layer.mlp.__class__ for layer in model.layers]
    for layer in model.layers:
        layer.mlp.__class__ = _GeluTanhMLP
    try:
        yield
    finally:
        for layer, cls in zip(model.layers, original):
            layer.mlp.__class__ = cls


@contextmanager
def phi3_short_factors(model, config):
    """HF/llama.cpp longrope: short factors while the context is within original_max_position_embeddings
    (the engine decides by its context size); mlx-lm's SuScaledRoPE always applies the long ones."""
    short = mx.array(config["rope_scaling"]["short_factor"], dtype=mx.float32)
    base = config.get("rope_theta", 10000.0)
    ropes = [layer.self_attn.rope for layer in model.layers]
    long = [rope._freqs for rope in ropes]
    for rope in ropes:
        rope._freqs = short * base ** (mx.arange(0, rope.dim, 2, dtype=mx.float32) / rope.dim)
    try:
        yield
    finally:
        for rope, freqs in zip(ropes, long):
            rope._freqs = freqs


@contextmanager
def phi3_sliding_window(model, config):
    """HF Phi3 attends within sliding_window on every layer; mlx-lm's phi3 ignores it. Applied with mlx-lm's
    own window masks and rotating caches."""
    from mlx_lm.models import base, cache as cache_module, phi3
    window = config["sliding_window"]
    original = phi3.create_attention_mask
    phi3.create_attention_mask = lambda h, c=None, **kw: base.create_attention_mask(h, c, window_size=window, **kw)
    model.make_cache = lambda: [cache_module.RotatingKVCache(max_size=window) for _ in model.layers]
    try:
        yield
    finally:
        phi3.create_attention_mask = original
        del model.make_cache


class _LayerOfKind(nn.Module):
    """A Gemma 3 block that attends as its layer_types entry says, with mlx-lm's own masks."""

    def __init__(self, block, window):
        super().__init__()
        self.block, self.window = block, window

    def __call__(self, x, mask=None, cache=None):
        from mlx_lm.models.base import create_attention_mask
        return self.block(x, create_attention_mask(x, cache, window_size=self.window), cache)


@contextmanager
def gemma3_layer_types(model, config):
    """HF Gemma 3: layer_types, when given, says which layers are local; mlx-lm reads only
    sliding_window_pattern. Each layer gets the RoPE, mask and cache its layer_types entry calls for."""
    from mlx_lm.models.cache import KVCache, RotatingKVCache
    inner = model.language_model.model if hasattr(model, "language_model") else model.model
    blocks, window = inner.layers, config["sliding_window"]
    sliding = [t == "sliding_attention" for t in config["layer_types"]]
    ropes = [b.self_attn.rope for b in blocks]
    local = next(r for b, r in zip(blocks, ropes) if b.self_attn.is_sliding)
    full = next(r for b, r in zip(blocks, ropes) if not b.self_attn.is_sliding)
    for b, is_sliding in zip(blocks, sliding):
        b.self_attn.rope = local if is_sliding else full
    inner.layers = [_LayerOfKind(b, window if is_sliding else None) for b, is_sliding in zip(blocks, sliding)]
    model.make_cache = lambda: [RotatingKVCache(max_size=window) if s else KVCache() for s in sliding]
    try:
        yield
    finally:
        inner.layers = blocks
        for b, r in zip(blocks, ropes):
            b.self_attn.rope = r
        del model.make_cache


PATCHES = {"gemma_gelu_tanh": gemma_gelu_tanh, "phi3_short_factors": phi3_short_factors,
           "phi3_sliding_window": phi3_sliding_window, "gemma3_layer_types": gemma3_layer_types}


# ---- running mlx-lm ---------------------------------------------------------------------------

def prompt_ids(n):
    """The fixed prompt: BOS, then ids spread over the vocabulary (no special ids 0-2)."""
    return [1] + [3 + (i * 197 + 31) % (VOCAB - 3) for i in range(n - 1)]


def run(model, prompt, steps):
    """mlx-lm's logits over the prompt (one uncached forward) and its greedy continuation with the
    logits of every step, through generate_step (chunked prefill, KV cache, async eval)."""
    prefill = model(mx.array([prompt]))[0].astype(mx.float32)
    seen = []

    def capture(_tokens, logits):
        seen.append(logits[0].astype(mx.float32))
        return logits

    greedy = []
    for token, _ in generate_step(mx.array(prompt), model, max_tokens=steps, logits_processors=[capture]):
        greedy.append(int(token))
    # generate_step computes step n+1 before yielding token n: seen[i] are the logits that chose greedy[i].
    rows = [prefill] + [s[None] for s in seen[1:steps]]
    logits = np.array(mx.concatenate(rows, axis=0), dtype="<f4")
    return greedy, logits


def write_result(out, stem, greedy, logits):
    (out / f"{stem}.f32").write_bytes(logits.tobytes())
    return {"greedy": greedy, "logits": f"{stem}.f32", "rows": int(logits.shape[0]), "vocab_size": int(logits.shape[1])}


def make_case(case, root, tokenizer_dir):
    out = root / case["key"]
    if (out / "reference.json").exists():
        return False
    tmp = root / (case["key"] + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    build_checkpoint(case, tmp / "model", tokenizer_dir)
    model, config = load_model(tmp / "model")
    prompt = prompt_ids(case.get("prompt_length", 64))
    steps = case.get("generate", 32)
    result = {"mlx_lm": mlx_lm.__version__, "family": case["family"], "prompt": prompt}
    patches = case.get("patches", [])
    if patches:
        result["plain"] = write_result(tmp, "plain", *run(model, prompt, steps))
    text_config = config.get("text_config", config)
    with ExitStack() as stack:
        for name in patches:
            stack.enter_context(PATCHES[name](model, text_config))
        result.update(write_result(tmp, "logits", *run(model, prompt, steps)))
    (tmp / "reference.json").write_text(json.dumps(result))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return True


def main():
    if sys.argv[1:] == ["--version"]:
        print(mlx_lm.__version__)
        return
    cases = json.loads(Path(sys.argv[1]).read_text())
    root = Path(sys.argv[2])
    root.mkdir(parents=True, exist_ok=True)
    mx.set_default_device(mx.gpu if sys.argv[4] == "gpu" else mx.cpu)
    with redirect_stdout(sys.stderr):  # quantize_model prints; stdout carries only the result
        made = [case["key"] for case in cases if make_case(case, root, Path(sys.argv[3]))]
    print(json.dumps({"made": made}))


if __name__ == "__main__":
    main()
