"""Streaming: audio chunks as soon as they can be decoded, long before the stages end.

The semantic stage runs in the background (a spawned run) and the coarse
windows start as soon as the semantic tokens they read exist (coarse.py's
SemanticSource), so first audio does not wait for the whole semantic stage.
`streamed_audio` drives the stages: it asks the coarse stage for one window at a
time (`CoarseWindows`), and whenever enough new coarse frames exist, the fine
stage (`ChunkedFine`) and the codec (`ChunkedCodec`) run on that chunk and the
audio goes out. Chunks start small (fast first audio) and double up to
MAX_CHUNK frames (less recomputation).

Semantic and coarse tokens are those of one-shot generation for the same
seed (each stage has its own random stream). Fine codes differ where a chunk
saw less context than the one-shot window (and in their random draws), and
the audio differs accordingly (benchmarks/README.md has the measured difference).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ..options import GenerationOptions
from .coarse import CoarseWindows, SemanticSource
from .codec import ChunkedCodec
from .fine import FINE_RIGHT, ChunkedFine
from .progress import Progress
from .work import Emit

# The first chunk: 14 frames (0.19 s) finalized with 16 frames of right context, so that it goes out
# after the first coarse window (30 frames); later chunks keep FINE_RIGHT (32) and double from 28 frames
# up to MAX_CHUNK. Only the first chunk's fine codes see less right context than later chunks'.
FIRST_CHUNK, FIRST_RIGHT = 14, 16
MAX_CHUNK = 240


def chunk_schedule(first: int = FIRST_CHUNK, largest: int = MAX_CHUNK) -> Iterator[tuple[int, int]]:
    """(frames, frames of right context) per chunk: small first, then doubling."""
    yield first, FIRST_RIGHT
    size = 2 * first
    while True:
        yield size, FINE_RIGHT
        size = min(largest, size * 2)


def streamed_audio(semantic: np.ndarray | SemanticSource, voice: dict | None, options: GenerationOptions,
                   rngs: list, progress: Progress | None = None):
    """Work items and Emit(chunk) items in; (coarse, fine, audio) of the whole stream out. `semantic`:
    the tokens, or a source of those a background run is still making.

    After each coarse window, once the frames past the last chunk make the next chunk and its right
    context, the fine stage finalizes them and the codec decodes them; after the last window (and
    the coarse row's release) the rest goes out."""
    coarse = CoarseWindows(semantic, voice, options.coarse, rngs[1], progress)
    fine = ChunkedFine(voice, options.fine.temperature, rngs[2])
    codec = ChunkedCodec()
    sizes = chunk_schedule()
    target, right = next(sizes)
    pieces: list[np.ndarray] = []
    while not coarse.done:
        yield from coarse.next_window()
        last = coarse.done
        if last and not coarse.steps:
            break  # no coarse frames at all: no audio
        codes = coarse.codes
        if not last and codes.shape[1] - fine.final < target + right:
            continue  # not yet a whole chunk
        final = yield from fine.extend(codes, last, right)
        audio = yield from codec.extend(final, last)
        if not last:
            target, right = next(sizes)
        if audio.size:
            pieces.append(audio)
            yield Emit(audio)
    audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    return coarse.codes, fine.result, audio
