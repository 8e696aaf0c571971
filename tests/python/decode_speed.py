"""mlx-lm's decode speed on a model directory, the reference for bench/moe.ts.

Usage:  python3 decode_speed.py MODEL_DIR DEVICE PROMPT_LENGTH TOKENS
Prints {"tokens_per_s": ..., "tokens": N}: greedy decode through mlx_lm.generate.generate_step, timed from
the first token to the last (prefill excluded), after one warm-up run.
"""
import json
import sys
import time
from pathlib import Path

import mlx.core as mx
from mlx_lm.generate import generate_step
from mlx_lm.utils import load_model


def decode(model, prompt, n):
    stamps = []
    for _ in generate_step(mx.array(prompt), model, max_tokens=n):
        stamps.append(time.perf_counter())
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def main():
    model_dir, device, prompt_length, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    mx.set_default_device(mx.gpu if device == "gpu" else mx.cpu)
    model, _ = load_model(Path(model_dir))
    prompt = [1] + [3 + (i * 197 + 31) % 509 for i in range(prompt_length - 1)]
    decode(model, prompt, 8)
    print(json.dumps({"tokens_per_s": decode(model, prompt, tokens), "tokens": tokens}))


if __name__ == "__main__":
    main()
