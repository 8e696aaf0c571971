"""mlx-lm's own LoRA tools for tests/mlx-lora.test.ts (never used at run time).

  lora.py train <spec.json>
      spec: {"model": dir, "data": dir with train.jsonl / valid.jsonl, "adapter_path": out dir,
             "fine_tune_type": "lora" | "dora", "num_layers": n, "iters": n, "learning_rate": x,
             "batch_size": n, "lora_parameters": {"rank", "scale", "dropout", "keys"?}, "seed": n}
      Runs `mlx_lm lora --train -c <config>` (the CLI a user runs), which writes adapter_config.json
      and adapters.safetensors to adapter_path. Prints {"seconds": training wall time}.

  lora.py generate <model dir> <adapter dir or ""> <prompts.json> <max_tokens>
      Greedy continuations as `mlx_lm generate --model <dir> --adapter-path <adapter> --prompt <p>
      --max-tokens n` computes them (mlx_lm.load with adapter_path, stream_generate with its default
      argmax sampler; the prompt is tokenized as the CLI does for a model without a chat template).
      Prints {"mlx_lm": version, "results": [{"prompt_ids": [...], "tokens": [...]}]}.

  lora.py to-gguf <adapter dir> <out.gguf> <n_head> <n_kv_head>
      Writes an mlx-lm LoRA adapter of a llama model as a llama.cpp LoRA adapter (GGUF, what
      llama.cpp's convert_lora_to_gguf.py writes from a PEFT adapter): general.type "adapter",
      adapter.type "lora", adapter.lora.alpha = scale * rank (llama.cpp scales by alpha / rank);
      tensors "blk.N.<module>.weight.lora_a" = A^T [rank, in] and ".lora_b" = B^T [out, rank], with
      the rows of q and k's B^T put in llama.cpp's rotary order (the permutation its converter applies
      to HF q/k weights).
"""
import json
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version


def train(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    config = dict(spec, train=True, steps_per_eval=10**6, steps_per_report=50, val_batches=1, save_every=10**6)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        json.dump(config, f)  # JSON is YAML
    start = time.time()
    run = subprocess.run([sys.executable, "-m", "mlx_lm", "lora", "-c", f.name], capture_output=True, text=True)
    if run.returncode != 0:
        sys.stderr.write(run.stdout[-3000:] + run.stderr[-3000:])
        sys.exit(1)
    print(json.dumps({"seconds": time.time() - start, "log": run.stdout[-1500:]}))


def generate(model_dir, adapter_dir, prompts_path, max_tokens):
    from mlx_lm import load, stream_generate

    model, tokenizer = load(model_dir, adapter_path=adapter_dir or None)
    with open(prompts_path) as f:
        prompts = json.load(f)
    results = []
    for prompt in prompts:
        ids = tokenizer.encode(prompt)
        tokens = [r.token for r in stream_generate(model, tokenizer, ids, max_tokens=int(max_tokens))]
        results.append({"prompt_ids": ids, "tokens": tokens})
    print(json.dumps({"mlx_lm": version("mlx-lm"), "results": results}))


GGUF_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def rotary_rows(rows, heads):
    # HF's rotate-half layout -> llama.cpp's interleaved pairs, per head.
    return rows.reshape(heads, 2, rows.shape[0] // heads // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def to_gguf(adapter_dir, out_path, n_head, n_kv_head):
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    with open(f"{adapter_dir}/adapter_config.json") as f:
        config = json.load(f)
    if config.get("fine_tune_type", "lora") != "lora":
        sys.exit("only LoRA adapters convert to llama.cpp's format")
    params = config["lora_parameters"]
    weights = load_file(f"{adapter_dir}/adapters.safetensors")
    writer = gguf.GGUFWriter(out_path, "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(params["scale"]) * int(params["rank"]))
    for name in sorted(weights):
        if not name.endswith(".lora_a"):
            continue
        module = name[: -len(".lora_a")]
        _, _, layer, key = module.split(".", 3)
        a = weights[name].astype(np.float32).T  # [rank, in]
        b = weights[module + ".lora_b"].astype(np.float32).T  # [out, rank]
        if key == "self_attn.q_proj":
            b = rotary_rows(b, int(n_head))
        elif key == "self_attn.k_proj":
            b = rotary_rows(b, int(n_kv_head))
        base = f"blk.{layer}.{GGUF_NAMES[key]}.weight"
        writer.add_tensor(base + ".lora_a", np.ascontiguousarray(a))
        writer.add_tensor(base + ".lora_b", np.ascontiguousarray(b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"train": train, "generate": generate, "to-gguf": to_gguf}[command](*args)
