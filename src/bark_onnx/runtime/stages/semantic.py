"""Stage 1: text tokens -> semantic tokens (Bark's `generate_text_semantic`).

The prefill feeds 256 text tokens (+ the infer token) with the voice's last
256 semantic tokens merged onto the same positions; then one token per step
through the KV cache, up to 768 tokens. A request stops when it samples EOS,
when P(EOS) >= min_eos_p, or after max_gen_duration_s of audio.
"""

from __future__ import annotations

import numpy as np

from bark_onnx.kernels.sampling import uniforms

from ..constants import MAX_SEMANTIC_HISTORY, MAX_SEMANTIC_STEPS, SEMANTIC_INFER_TOKEN, SEMANTIC_PAD_TOKEN, \
    SEMANTIC_EOS_TOKEN, SEMANTIC_RATE_HZ
from ..options import SemanticOptions
from .progress import Progress
from .work import Generate, Release

EOS = SEMANTIC_EOS_TOKEN


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


def semantic_run(text_tokens: np.ndarray, history: np.ndarray, opts: SemanticOptions,
                 rng: np.random.Generator | None, progress: Progress | None = None) -> Generate:
    """The semantic stage as one decoding run: text_tokens (256,) and history (256,) prefilled, then a
    token per step until EOS is drawn, P(EOS) reaches min_eos_p (the token drawn then is dropped,
    as Bark drops it) or max_gen_duration_s is used up."""
    max_tokens = max_semantic_tokens(opts.max_gen_duration_s)
    band = 0 if opts.allow_early_stop else 1  # the 10 000 semantic tokens, with EOS (column 10 000) or without
    return Generate(
        "semantic", np.append(text_tokens, SEMANTIC_INFER_TOKEN), max_tokens, opts.temperature,
        uniforms(rng, max_tokens, opts.temperature), np.full(max_tokens, band),
        merge=history, top_k=opts.top_k, top_p=opts.top_p, eos=EOS if opts.allow_early_stop else None,
        min_eos_p=opts.min_eos_p if opts.allow_early_stop else None,
        progress=progress.reporter() if progress is not None else None)


def semantic_loop(text_tokens: np.ndarray, history: np.ndarray, opts: SemanticOptions,
                  rng: np.random.Generator | None, progress: Progress | None = None):
    """Work items in, semantic tokens (n,) int64 out (see semantic_run)."""
    progress = progress or Progress.off()
    progress.start("semantic", max_semantic_tokens(opts.max_gen_duration_s), "tok")
    tokens = yield semantic_run(text_tokens, history, opts, rng, progress)
    progress.close()
    yield Release("semantic")
    return tokens
