"""mlx-lm's log-probabilities of given tokens, the reference for tests/logprobs.test.ts.

Usage: mlx_lm_logprobs.py <model dir> <request.json> <out.f32>
request.json: {"prompt": [ids], "tokens": [ids the engine generated], "temperature": T, "top_p": p,
               "min_p": m, "top_k": k, "repetition_penalty": r, "repetition_context_size": n}
               (all but the ids optional)

For each generated token i, the distribution it was drawn from, computed with mlx-lm's own pieces:
the model's forward pass over prompt + tokens (one pass, every position), the logits at the
position before token i through make_logits_processors (repetition penalty over prompt + tokens[:i],
as generate_step feeds it), log-softmax (as generate_step), then, when temperature > 0, make_sampler's
filters in its order (apply_top_p, apply_min_p, apply_top_k) and categorical_sampling's scaling
(logprobs * 1/T), renormalised.
Writes float32 little-endian rows [len(tokens), vocab].
"""
import json
import sys

import mlx.core as mx
import numpy as np
from mlx_lm import load
from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p, make_logits_processors


def main():
    model_dir, request_file, out = sys.argv[1:4]
    req = json.loads(open(request_file).read())
    prompt, tokens = req["prompt"], req["tokens"]
    temp = float(req.get("temperature", 0))
    top_k = int(req.get("top_k", 0))
    top_p = float(req.get("top_p", 1))
    min_p = float(req.get("min_p", 0))
    processors = make_logits_processors(
        repetition_penalty=req.get("repetition_penalty"), repetition_context_size=req.get("repetition_context_size", 20)
    )
    model, _ = load(model_dir)
    ids = prompt + tokens
    logits = model(mx.array(ids)[None]).astype(mx.float32)[0]
    rows = []
    for i in range(len(tokens)):
        row = logits[len(prompt) - 1 + i][None]
        context = mx.array(ids[: len(prompt) + i])
        for processor in processors:
            row = processor(context, row)
        logprobs = row - mx.logsumexp(row, axis=-1, keepdims=True)
        if temp > 0:
            if 0 < top_p < 1:
                logprobs = apply_top_p(logprobs, top_p)
            if min_p > 0:
                logprobs = apply_min_p(logprobs, min_p)
            if top_k > 0:
                logprobs = apply_top_k(logprobs, top_k)
            scaled = logprobs * (1 / temp)
            logprobs = scaled - mx.logsumexp(scaled, axis=-1, keepdims=True)
        rows.append(np.array(logprobs[0]).astype("<f4"))
    with open(out, "wb") as f:
        for r in rows:
            f.write(r.tobytes())


if __name__ == "__main__":
    main()
