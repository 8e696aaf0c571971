"""The mlx-lm side of bench/mlx-lm.ts: holds one model and times mlx-lm's own decode loop on request.

Usage: mlx_lm_side.py <model dir> [dtype]   (dtype casts the loaded model, e.g. float32)
Prints one JSON line when loaded, then answers each JSON line on stdin with one JSON line:
  {"ids": [...], "decodeTokens": N} -> {"ttftMs", "prefillTps", "generatedTokens", "decodeTps",
                                         "decodeCpuMsPerToken", "peakBytes", "tokens"}
  {"exit": true}                     -> exits
Same definitions as the mlx-node side: prefill tok/s = prompt tokens / time to the first token;
decode tok/s = tokens after the first / time from the first to the last; CPU time is the process's
(all threads) over the same interval; greedy (mlx-lm's default sampler is argmax), no EOS stop.
Tokenizer-free (mlx_lm.utils.load_model), so synthetic models without tokenizer files run too.
"""
import json
import sys
import time
from pathlib import Path

import mlx.core as mx
from mlx_lm.generate import generate_step
from mlx_lm.utils import load_model


def sample(model, ids, decode_tokens):
    mx.reset_peak_memory()
    prompt = mx.array(ids)
    tokens = []
    start = time.perf_counter()
    first = last = cpu_first = cpu_last = 0.0
    for token, _ in generate_step(prompt, model, max_tokens=decode_tokens):
        last, cpu_last = time.perf_counter(), time.process_time()
        if not tokens:
            first, cpu_first = last, cpu_last
        tokens.append(int(token))
    after_first = len(tokens) - 1
    return {
        "ttftMs": (first - start) * 1000,
        "prefillTps": len(ids) / (first - start),
        "generatedTokens": len(tokens),
        "decodeTps": after_first / (last - first) if after_first else float("nan"),
        "decodeCpuMsPerToken": (cpu_last - cpu_first) * 1000 / after_first if after_first else float("nan"),
        "peakBytes": mx.get_peak_memory(),
        "tokens": tokens,
    }


def main():
    model_dir = sys.argv[1]
    started = time.perf_counter()
    model, _ = load_model(Path(model_dir))
    if len(sys.argv) > 2:
        model.set_dtype(getattr(mx, sys.argv[2]))
        mx.eval(model.parameters())
    print(json.dumps({"ready": True, "loadMs": (time.perf_counter() - started) * 1000, "mlx": mx.__version__}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("exit"):
            break
        print(json.dumps(sample(model, request["ids"], request["decodeTokens"])), flush=True)


if __name__ == "__main__":
    main()
