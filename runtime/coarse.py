"""Stage 2: semantic tokens -> 2 coarse EnCodec codebooks (Bark's `generate_coarse`).

Coarse tokens interleave codebooks 0 and 1 (offsets 10 000 and 11 024). The
loop runs in windows of 60 steps; each window starts a fresh KV cache with a
prefill of up to 256 semantic tokens around the current position, the infer
token, and the last 630 coarse tokens, then samples up to 60 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from bark_onnx.kernels.sampling import sample

from .constants import (
    CODEBOOK_SIZE, COARSE_INFER_TOKEN, COARSE_SEMANTIC_PAD_TOKEN, CONTEXT_WINDOW_SIZE, MAX_TEXT_TOKENS,
    N_COARSE_CODEBOOKS, SEMANTIC_TO_COARSE_RATIO, SEMANTIC_VOCAB_SIZE,
)
from .decoder import CausalDecoder
from .errors import InputError
from .semantic import check_sampling


@dataclass(frozen=True)
class CoarseOptions:
    temperature: float | None = 0.7
    top_k: int | None = None
    top_p: float | None = None
    max_coarse_history: int = 630
    sliding_window_len: int = 60

    def __post_init__(self):
        check_sampling(self.temperature, self.top_k, self.top_p)
        if not 60 <= self.max_coarse_history <= 630:
            raise InputError(f"max_coarse_history must lie in [60, 630], got {self.max_coarse_history}")
        if self.sliding_window_len < 1:
            raise InputError(f"sliding_window_len must be positive, got {self.sliding_window_len}")
        if self.max_coarse_history + self.sliding_window_len > CONTEXT_WINDOW_SIZE - MAX_TEXT_TOKENS:
            raise InputError(
                f"max_coarse_history + sliding_window_len must be at most {CONTEXT_WINDOW_SIZE - MAX_TEXT_TOKENS}, "
                f"got {self.max_coarse_history} + {self.sliding_window_len}"
            )

    @property
    def max_semantic_history(self) -> int:
        return int(np.floor(self.max_coarse_history / SEMANTIC_TO_COARSE_RATIO))


def check_semantic(semantic) -> np.ndarray:
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


def coarse_windows(decoder: CausalDecoder, semantic: list[np.ndarray], voice: dict | None, opts: CoarseOptions,
                   rng: np.random.Generator | None, silent: bool = False) -> Iterator[list[np.ndarray]]:
    """Run the coarse loop; after every window yield each row's (2, n) codes so far.

    Rows (same voice) run in lockstep: their windows line up because they share
    the voice; a row whose steps are done rides along and its samples are ignored.
    """
    sem_hist, coarse_hist = coarse_history(voice, opts)
    batch = len(semantic)
    steps = np.array([n_coarse_steps(len(s)) for s in semantic])
    total_steps = int(steps.max())
    x_semantic = [np.concatenate([sem_hist, s]) for s in semantic]
    x_coarse = np.zeros((batch, len(coarse_hist) + total_steps), dtype=np.int64)
    x_coarse[:, : len(coarse_hist)] = coarse_hist
    filled = n0 = len(coarse_hist)
    base = len(sem_hist)
    window = opts.sliding_window_len
    n_windows = int(np.ceil(total_steps / window))
    n_step = 0
    previous = None  # the last window's semantic part: while it repeats, its cached keys stay valid
    owner = object()  # this generator's claim on the decoder's cache
    for _ in tqdm(range(n_windows), desc="coarse", unit="window", disable=silent, leave=False):
        semantic_idx = base + int(round(n_step / SEMANTIC_TO_COARSE_RATIO))
        start = max(0, semantic_idx - opts.max_semantic_history)
        x_in = np.full((batch, MAX_TEXT_TOKENS), COARSE_SEMANTIC_PAD_TOKEN, dtype=np.int64)
        for b, row in enumerate(x_semantic):
            part = row[start: start + MAX_TEXT_TOKENS]
            x_in[b, : part.size] = part
        history = x_coarse[:, max(0, filled - opts.max_coarse_history): filled]
        prompt = np.concatenate([x_in, np.full((batch, 1), COARSE_INFER_TOKEN), history], 1)
        # Causal attention: positions 0..256 (semantic + infer) depend on those tokens alone, so a
        # window with the same semantic part as the last one reuses their cached keys and values.
        prefix = MAX_TEXT_TOKENS + 1
        if previous is not None and np.array_equal(previous, x_in) and decoder.can_keep(batch, prefix, owner):
            decoder.start(batch, keep=prefix, owner=owner)
            logits = decoder.forward(prompt[:, prefix:])
        else:
            decoder.start(batch, owner=owner)
            logits = decoder.forward(prompt)
        previous = x_in
        for k in range(window):
            if n_step >= total_steps:
                break
            if k > 0:
                logits = decoder.forward(x_coarse[:, filled - 1: filled])
            codebook = n_step % N_COARSE_CODEBOOKS
            cols = slice(codebook * CODEBOOK_SIZE, (codebook + 1) * CODEBOOK_SIZE)  # graph columns start at 10 000
            tokens, _ = sample(logits[:, cols], opts.temperature, rng, opts.top_k, opts.top_p)
            x_coarse[:, filled] = tokens + SEMANTIC_VOCAB_SIZE + codebook * CODEBOOK_SIZE
            filled += 1
            n_step += 1
        yield [_unflatten(x_coarse[b, n0: n0 + min(n_step, steps[b])]) for b in range(batch)]


def generate_coarse(decoder: CausalDecoder, semantic: list[np.ndarray], voice: dict | None, opts: CoarseOptions,
                    rng: np.random.Generator | None, silent: bool = False) -> list[np.ndarray]:
    """Semantic rows (same voice) -> one (2, n) coarse array per row."""
    out = None
    for out in coarse_windows(decoder, semantic, voice, opts, rng, silent):
        pass
    return out


def _unflatten(flat: np.ndarray) -> np.ndarray:
    """Interleaved coarse tokens -> (2, n) codes in [0, 1024)."""
    codes = flat[: len(flat) - len(flat) % N_COARSE_CODEBOOKS].reshape(-1, N_COARSE_CODEBOOKS).T - SEMANTIC_VOCAB_SIZE
    return codes - (np.arange(N_COARSE_CODEBOOKS) * CODEBOOK_SIZE)[:, None]
