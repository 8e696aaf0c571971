"""mlx-lm's greedy continuations and prompt logits on chat prompts, the reference for
tests/mlx-real-models.test.ts.

Usage: mlx_lm_greedy.py <model dir> <prompts.json> <max tokens> <out prefix> [float32|bfloat16|float16]
prompts.json: a list of message lists. Each is rendered with the model's chat template by mlx-lm's
tokenizer (transformers' apply_chat_template, generation prompt added), then run by mlx_lm's own
decode loop, generate_step, with its default sampler (argmax) and no end-of-sequence stop, so both
sides make exactly <max tokens>. The optional dtype casts the loaded model (mlx-lm computes in the
weights' dtype).
Writes <out>.json {"vocab", "prompts": [{"ids", "tokens", "text"}]} and <out>.f32: the logits of every
prompt position, prompts one after another, float32 little-endian, row-major (positions x vocab).
"""
import json
import sys

import mlx.core as mx
import numpy as np
from mlx_lm import load
from mlx_lm.generate import generate_step


def main():
    model_dir, prompts_file, max_tokens, out = sys.argv[1:5]
    dtype = sys.argv[5] if len(sys.argv) > 5 else None
    model, tokenizer = load(model_dir)
    if dtype:
        model.set_dtype(getattr(mx, dtype))
    conversations = json.loads(open(prompts_file).read())
    results = []
    with open(out + ".f32", "wb") as logits_file:
        for messages in conversations:
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
            prompt = mx.array(ids)
            tokens = [int(t) for t, _ in generate_step(prompt, model, max_tokens=int(max_tokens))]
            logits = model(prompt[None]).astype(mx.float32)[0]
            logits_file.write(np.array(logits).astype("<f4").tobytes())
            results.append({"ids": list(ids), "tokens": tokens, "text": tokenizer.decode(tokens)})
            vocab = logits.shape[-1]
    with open(out + ".json", "w") as f:
        json.dump({"vocab": vocab, "dtype": dtype or "weights", "prompts": results}, f)


if __name__ == "__main__":
    main()
