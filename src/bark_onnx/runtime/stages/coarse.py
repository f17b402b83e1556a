"""Stage 2: semantic tokens -> 2 coarse EnCodec codebooks (Bark's `generate_coarse`).

Coarse tokens interleave codebooks 0 and 1 (offsets 10 000 and 11 024). The
stage runs in windows of 60 steps (`CoarseWindows`); each window is one decoding
run: a prefill of up to 256 semantic tokens around the current position, the
infer token and the last 630 coarse tokens, then up to 60 tokens, each drawn
from its codebook's 1024 columns. While the semantic part repeats from one
window to the next, the cache keeps those positions (see engine/decoder.py) and
the prefill computes only the coarse history. `coarse_loop` runs the windows
one after another; a stream (stream.py) runs the fine stage and the codec
between them. The semantic tokens come from a `SemanticSource`: all at once, or
as a background semantic run makes them.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from bark_onnx.kernels.sampling import uniforms

from ..constants import CODEBOOK_SIZE, COARSE_INFER_TOKEN, COARSE_SEMANTIC_PAD_TOKEN, MAX_TEXT_TOKENS, \
    N_COARSE_CODEBOOKS, SEMANTIC_TO_COARSE_RATIO, SEMANTIC_VOCAB_SIZE
from ..errors import InputError
from ..options import CoarseOptions
from .progress import Progress
from .work import Await, Generate, Release, RunTokens


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


def semantic_for_steps(steps: int) -> int:
    """The fewest semantic tokens whose coarse stage has at least `steps` steps."""
    n = int(np.floor(steps / SEMANTIC_TO_COARSE_RATIO))
    while n_coarse_steps(n) < steps:
        n += 1
    return n


class SemanticSource:
    """The semantic tokens as the coarse windows read them: all of them (one-shot), or those of the
    request's background semantic run (a stream), which the windows wait for only as far as each
    reads (`upto`). Once the run is seen to have ended, the source yields the work items `at_end`
    (free the run's row, spawn the next segment's run) and notes when (`ended_at`)."""

    def __init__(self, tokens: np.ndarray | None = None, at_end: Sequence = ()):
        self.ended = tokens is not None
        self.tokens = np.zeros(0, np.int64) if tokens is None else tokens
        self.at_end = tuple(at_end)
        self.ended_at: float | None = None  # time.perf_counter() when a background run's end was seen

    def upto(self, n: int):
        """Work items in: at least n tokens known, or all of them."""
        if self.ended or len(self.tokens) >= n:
            return
        reply: RunTokens = yield Await("semantic", n)
        self.tokens, self.ended = reply.tokens, reply.ended
        if self.ended:
            self.ended_at = time.perf_counter()
            for item in self.at_end:
                yield item


class CoarseWindows:
    """The coarse stage, one window at a time: `next_window()` draws the next window, or finds the
    stage's end (`done`, its cache row released). `codes` are the (2, n) codes drawn so far.

    semantic: the tokens, or a source of tokens still being made: a window starts as soon as the
    tokens it reads exist (window w reads up to 256 tokens from its position, ~47 new ones for the
    first window with a voice, 256 without), and only the number of steps waits for the end.
    """

    def __init__(self, semantic: np.ndarray | SemanticSource, voice: dict | None, opts: CoarseOptions,
                 rng: np.random.Generator | None, progress: Progress | None = None):
        self.source = semantic if isinstance(semantic, SemanticSource) else SemanticSource(semantic)
        self.opts, self.rng = opts, rng
        self.sem_hist, coarse_hist = coarse_history(voice, opts)
        self.x_coarse = coarse_hist  # flattened: the voice's history, then the tokens drawn
        self.n0 = len(coarse_hist)
        self.steps = 0  # coarse tokens drawn
        self.done = False
        self.progress = progress or Progress.off()
        source = self.source
        self.progress.start("coarse", n_coarse_steps(len(source.tokens)) if source.ended else None, "tok")

    @property
    def codes(self) -> np.ndarray:
        return _unflatten(self.x_coarse[self.n0:])

    def next_window(self):
        """Work items in: the next window's tokens drawn, or the stage found done."""
        opts, source, base = self.opts, self.source, len(self.sem_hist)
        semantic_idx = base + int(round(self.steps / SEMANTIC_TO_COARSE_RATIO))
        start = max(0, semantic_idx - opts.max_semantic_history)
        # the tokens this window reads, and enough to know it is a whole window
        yield from source.upto(max(start + MAX_TEXT_TOKENS - base, semantic_for_steps(self.steps + opts.sliding_window_len)))
        total_steps = n_coarse_steps(len(source.tokens)) if source.ended else None
        if total_steps is not None and self.steps >= total_steps:
            yield from self._finish()
            return
        self.progress.total(total_steps)
        k = opts.sliding_window_len if total_steps is None else min(opts.sliding_window_len, total_steps - self.steps)
        x_semantic = np.concatenate([self.sem_hist, source.tokens])
        x_in = np.full(MAX_TEXT_TOKENS, COARSE_SEMANTIC_PAD_TOKEN, dtype=np.int64)
        part = x_semantic[start: start + MAX_TEXT_TOKENS]
        x_in[: part.size] = part
        history = self.x_coarse[max(0, len(self.x_coarse) - opts.max_coarse_history):]
        codebooks = (self.steps + np.arange(k)) % N_COARSE_CODEBOOKS  # even steps codebook 0, odd 1: the bands
        drawn = yield Generate(  # token ids: 10 000 + codebook * 1024 + code
            "coarse", np.concatenate([x_in, [COARSE_INFER_TOKEN], history]), k, opts.temperature,
            uniforms(self.rng, k, opts.temperature), codebooks, top_k=opts.top_k, top_p=opts.top_p)
        self.x_coarse = np.concatenate([self.x_coarse, drawn])
        self.steps += k
        self.progress.update(k)
        if total_steps is not None and self.steps >= total_steps:
            yield from self._finish()

    def _finish(self):
        self.progress.close()
        self.done = True
        yield Release("coarse")


def coarse_loop(semantic: np.ndarray | SemanticSource, voice: dict | None, opts: CoarseOptions,
                rng: np.random.Generator | None, progress: Progress | None = None):
    """Work items in, coarse codes (2, n) out: every window of CoarseWindows, one after another."""
    windows = CoarseWindows(semantic, voice, opts, rng, progress)
    while not windows.done:
        yield from windows.next_window()
    return windows.codes


def _unflatten(flat: np.ndarray) -> np.ndarray:
    """Interleaved coarse tokens -> (2, n) codes in [0, 1024)."""
    codes = flat[: len(flat) - len(flat) % N_COARSE_CODEBOOKS].reshape(-1, N_COARSE_CODEBOOKS).T - SEMANTIC_VOCAB_SIZE
    return codes - (np.arange(N_COARSE_CODEBOOKS) * CODEBOOK_SIZE)[:, None]
