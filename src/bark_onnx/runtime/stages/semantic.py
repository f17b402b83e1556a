"""Stage 1: text tokens -> semantic tokens (Bark's `generate_text_semantic`).

The prefill feeds 256 text tokens (+ the infer token) with the voice's last
256 semantic tokens merged onto the same positions; then one token per step
through the KV cache, up to 768 tokens. A request stops when it samples EOS,
when P(EOS) >= min_eos_p, or after max_gen_duration_s of audio.
"""

from __future__ import annotations

import numpy as np

from bark_onnx.kernels.sampling import sample

from ..constants import MAX_SEMANTIC_HISTORY, MAX_SEMANTIC_STEPS, SEMANTIC_INFER_TOKEN, SEMANTIC_PAD_TOKEN, \
    SEMANTIC_RATE_HZ, SEMANTIC_VOCAB_SIZE
from ..options import SemanticOptions
from .progress import Progress
from .work import Prefill, Release, Step

EOS = SEMANTIC_VOCAB_SIZE  # the pad token doubles as end of sequence


def semantic_history(voice: dict | None) -> np.ndarray:
    """The voice's last 256 semantic tokens, right-padded with the semantic pad (all pad without a voice)."""
    if voice is None:
        return np.full(MAX_SEMANTIC_HISTORY, SEMANTIC_PAD_TOKEN, dtype=np.int64)
    hist = voice["semantic_prompt"].astype(np.int64)[-MAX_SEMANTIC_HISTORY:]
    return np.pad(hist, (0, MAX_SEMANTIC_HISTORY - hist.size), constant_values=SEMANTIC_PAD_TOKEN)


def max_semantic_tokens(max_gen_duration_s: float | None) -> int:
    """Tokens kept before the duration limit stops a request: Bark adds 1/49.9 s per token and
    stops once the sum exceeds the limit, keeping that token (same float sums here)."""
    if max_gen_duration_s is None:
        return MAX_SEMANTIC_STEPS
    total, n = 0.0, 0
    while n < MAX_SEMANTIC_STEPS:
        n += 1
        total += 1 / SEMANTIC_RATE_HZ
        if total > max_gen_duration_s:
            break
    return n


def duration_for_tokens(n_tokens: int) -> float:
    """A max_gen_duration_s that stops the semantic stage after exactly n_tokens (with EOS off)."""
    return (n_tokens - 0.5) / SEMANTIC_RATE_HZ


def semantic_loop(text_tokens: np.ndarray, history: np.ndarray, opts: SemanticOptions,
                  rng: np.random.Generator | None, progress: Progress | None = None):
    """Work items in, semantic tokens (n,) int64 out: text_tokens (256,) and history (256,)."""
    logits = yield Prefill("semantic", np.append(text_tokens, SEMANTIC_INFER_TOKEN), merge=history)
    max_tokens = max_semantic_tokens(opts.max_gen_duration_s)
    n_cols = SEMANTIC_VOCAB_SIZE + 1 if opts.allow_early_stop else SEMANTIC_VOCAB_SIZE
    tokens: list[int] = []
    progress = progress or Progress.off()
    progress.start("semantic", max_tokens, "tok")
    for n in range(max_tokens):
        token, probs = sample(logits[None, :n_cols], opts.temperature, rng, opts.top_k, opts.top_p)
        token = int(token[0])
        if opts.allow_early_stop and (token == EOS or (opts.min_eos_p is not None and
                                                       probs[0, EOS] >= opts.min_eos_p)):
            break
        tokens.append(token)
        progress.update()
        if n == max_tokens - 1:
            break
        logits = yield Step("semantic", token)
    progress.close()
    yield Release("semantic")
    return np.array(tokens, dtype=np.int64)
