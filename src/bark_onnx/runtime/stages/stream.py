"""Streaming: audio chunks as soon as they can be decoded, long before the coarse stage ends.

The semantic stage runs first; then after every coarse window, whenever
enough new coarse frames exist, the fine stage (`ChunkedFine`) and the codec
(`ChunkedCodec`) run on that chunk and the audio goes out. Chunks start small
(fast first audio) and double up to MAX_CHUNK frames (less recomputation).

Semantic and coarse tokens are those of one-shot generation for the same
seed (each stage has its own random stream). Fine codes differ where a chunk
saw less context than the one-shot window (and in their random draws), and
the audio differs accordingly (benchmarks/README.md has the measured difference).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ..options import GenerationOptions
from .coarse import coarse_loop
from .codec import ChunkedCodec
from .fine import FINE_RIGHT, ChunkedFine
from .progress import Progress
from .work import Emit

FIRST_CHUNK = 30  # frames (0.4 s) in the first chunk; later chunks double up to MAX_CHUNK
MAX_CHUNK = 240


def chunk_schedule(first: int = FIRST_CHUNK, largest: int = MAX_CHUNK) -> Iterator[int]:
    """Frames per chunk: small first, then doubling."""
    size = first
    while True:
        yield size
        size = min(largest, size * 2)


def streamed_audio(semantic: np.ndarray, voice: dict | None, options: GenerationOptions, rngs: list,
                   progress: Progress | None = None):
    """Work items and Emit(chunk) items in; (coarse, fine, audio) of the whole stream out."""
    fine = ChunkedFine(voice, options.fine.temperature, rngs[2])
    codec = ChunkedCodec()
    sizes = chunk_schedule()
    state = {"target": next(sizes)}
    pieces: list[np.ndarray] = []

    def after_window(coarse: np.ndarray, last: bool):
        if not last and coarse.shape[1] - fine.final < state["target"] + FINE_RIGHT:
            return
        codes = yield from fine.extend(coarse, last)
        audio = yield from codec.extend(codes, last)
        if not last:
            state["target"] = next(sizes)
        if audio.size:
            pieces.append(audio)
            yield Emit(audio)

    coarse = yield from coarse_loop(semantic, voice, options.coarse, rngs[1], progress, after_window)
    audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    return coarse, fine.result, audio
