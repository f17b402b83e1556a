"""Stage 2: semantic tokens -> 2 coarse EnCodec codebooks (Bark's `generate_coarse`).

Coarse tokens interleave codebooks 0 and 1 (offsets 10 000 and 11 024). The
loop runs in windows of 60 steps; each window is one decoding run: a prefill of
up to 256 semantic tokens around the current position, the infer token and the
last 630 coarse tokens, then up to 60 tokens, each drawn from its codebook's
1024 columns. While the semantic part
repeats from one window to the next, the cache keeps those positions (see
engine/decoder.py) and the prefill computes only the coarse history.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from bark_onnx.kernels.sampling import uniforms

from ..constants import CODEBOOK_SIZE, COARSE_INFER_TOKEN, COARSE_SEMANTIC_PAD_TOKEN, MAX_TEXT_TOKENS, \
    N_COARSE_CODEBOOKS, SEMANTIC_TO_COARSE_RATIO, SEMANTIC_VOCAB_SIZE
from ..errors import InputError
from ..options import CoarseOptions
from .progress import Progress
from .work import Generate, Release


def check_semantic(semantic) -> np.ndarray:
    """The coarse stage's input: a non-empty 1-D array of semantic tokens."""
    arr = np.asarray(semantic)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise InputError(f"semantic tokens must be a non-empty 1-D integer array, got shape {arr.shape} {arr.dtype}")
    if arr.min() < 0 or arr.max() >= SEMANTIC_VOCAB_SIZE:
        raise InputError(f"semantic tokens must lie in [0, {SEMANTIC_VOCAB_SIZE}), got [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64)


def flatten_codebooks(codes: np.ndarray) -> np.ndarray:
    """(n_q, T) codes -> (n_q * T,) interleaved frame by frame, codebook q offset by q * 1024."""
    offsets = np.arange(codes.shape[0])[:, None] * CODEBOOK_SIZE
    return (codes + offsets).ravel(order="F")


def coarse_history(voice: dict | None, opts: CoarseOptions) -> tuple[np.ndarray, np.ndarray]:
    """The voice's semantic and coarse histories, trimmed to stay aligned (as Bark does)."""
    if voice is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    sem = voice["semantic_prompt"].astype(np.int64)
    coarse = flatten_codebooks(voice["coarse_prompt"].astype(np.int64)) + SEMANTIC_VOCAB_SIZE
    n_sem = int(min(opts.max_semantic_history, len(sem) - len(sem) % 2,
                    int(np.floor(len(coarse) / SEMANTIC_TO_COARSE_RATIO))))
    n_coarse = int(round(n_sem * SEMANTIC_TO_COARSE_RATIO))
    # Bark's slices, kept as they are: a count of 0 keeps the whole array ([-0:])
    sem = sem[-n_sem:]
    coarse = coarse[-n_coarse:]
    return sem, coarse[:-2]  # Bark drops the last two coarse tokens for time alignment


def n_coarse_steps(n_semantic: int) -> int:
    return int(round(np.floor(n_semantic * SEMANTIC_TO_COARSE_RATIO / N_COARSE_CODEBOOKS) * N_COARSE_CODEBOOKS))


def coarse_loop(semantic: np.ndarray, voice: dict | None, opts: CoarseOptions, rng: np.random.Generator | None,
                progress: Progress | None = None,
                after_window: Callable[[np.ndarray, bool], Iterator] | None = None):
    """Work items in, coarse codes (2, n) out.

    after_window(codes so far, last): a generator run after every window (the
    stream's fine and codec chunks), once the cache row is free after the last.
    """
    sem_hist, coarse_hist = coarse_history(voice, opts)
    total_steps = n_coarse_steps(len(semantic))
    x_semantic = np.concatenate([sem_hist, semantic])
    x_coarse = np.concatenate([coarse_hist, np.zeros(total_steps, np.int64)])
    filled = n0 = len(coarse_hist)
    base = len(sem_hist)
    n_step = 0
    progress = progress or Progress.off()
    progress.start("coarse", total_steps, "tok")
    while n_step < total_steps:
        semantic_idx = base + int(round(n_step / SEMANTIC_TO_COARSE_RATIO))
        start = max(0, semantic_idx - opts.max_semantic_history)
        x_in = np.full(MAX_TEXT_TOKENS, COARSE_SEMANTIC_PAD_TOKEN, dtype=np.int64)
        part = x_semantic[start: start + MAX_TEXT_TOKENS]
        x_in[: part.size] = part
        history = x_coarse[max(0, filled - opts.max_coarse_history): filled]
        k = min(opts.sliding_window_len, total_steps - n_step)  # the window's draws
        codebooks = (n_step + np.arange(k)) % N_COARSE_CODEBOOKS  # even steps codebook 0, odd 1: the bands
        x_coarse[filled: filled + k] = yield Generate(  # token ids: 10 000 + codebook * 1024 + code
            "coarse", np.concatenate([x_in, [COARSE_INFER_TOKEN], history]), k, opts.temperature,
            uniforms(rng, k, opts.temperature), codebooks, top_k=opts.top_k, top_p=opts.top_p)
        filled += k
        n_step += k
        progress.update(k)
        last = n_step >= total_steps
        if last:
            progress.close()
            yield Release("coarse")
        if after_window is not None:
            yield from after_window(_unflatten(x_coarse[n0:filled]), last)
    return _unflatten(x_coarse[n0:filled])


def _unflatten(flat: np.ndarray) -> np.ndarray:
    """Interleaved coarse tokens -> (2, n) codes in [0, 1024)."""
    codes = flat[: len(flat) - len(flat) % N_COARSE_CODEBOOKS].reshape(-1, N_COARSE_CODEBOOKS).T - SEMANTIC_VOCAB_SIZE
    return codes - (np.arange(N_COARSE_CODEBOOKS) * CODEBOOK_SIZE)[:, None]
