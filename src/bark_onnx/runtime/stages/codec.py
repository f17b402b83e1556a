"""Stage 4: fine codes (8, T) -> 24 kHz audio through the EnCodec decoder graph.

`ChunkedCodec` decodes a stream's codes chunk by chunk: each decode starts
CODEC_LEFT frames before the first sample still to emit (to settle the
convolutions and the LSTM), and the last CROSSFADE samples are held back and
blended with the next chunk's decode of the same samples, so joins are click-free.
"""

from __future__ import annotations

import numpy as np

from ..constants import CODEBOOK_SIZE, N_FINE_CODEBOOKS, SAMPLES_PER_FRAME
from ..errors import InputError
from .work import Decode

CODEC_LEFT = 32  # frames decoded before a chunk
CROSSFADE = 480  # samples (20 ms) blended between consecutive chunks
# The transposed convolutions leave the last ~2 frames of a decode without the
# next frame's overlap: those samples are never emitted, the next decode redoes them.
GUARD = 2 * SAMPLES_PER_FRAME


def check_fine(fine) -> np.ndarray:
    """The codec's input: (8, T > 0) integer codes in [0, 1024)."""
    arr = np.asarray(fine)
    if arr.ndim != 2 or arr.shape[0] != N_FINE_CODEBOOKS or arr.shape[1] == 0 or arr.dtype.kind not in "iu":
        raise InputError(f"fine codes must be an integer array of shape (8, T > 0), got {arr.shape} {arr.dtype}")
    if arr.min() < 0 or arr.max() >= CODEBOOK_SIZE:
        raise InputError(f"fine codes must lie in [0, {CODEBOOK_SIZE}), got [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64)


def decode(fine: np.ndarray):
    """Work items in, float32 audio (T * 320,) out."""
    audio = yield Decode(fine)
    return audio


class ChunkedCodec:
    """Decodes a stream's fine codes chunk by chunk, with left context and crossfaded joins."""

    def __init__(self):
        self.codes = np.zeros((N_FINE_CODEBOOKS, 0), np.int64)
        self.emitted = 0  # samples
        self.tail: np.ndarray | None = None
        self.fade = np.linspace(0.0, 1.0, CROSSFADE, dtype=np.float32)

    def extend(self, fine: np.ndarray, last: bool):
        """Newly final codes (8, n) in; work items in, the audio that is now final out."""
        if fine.shape[1] == 0 and not last:
            return np.zeros(0, np.float32)
        self.codes = np.hstack([self.codes, fine])
        first = max(0, self.emitted // SAMPLES_PER_FRAME - CODEC_LEFT)
        audio = yield Decode(self.codes[:, first:])
        seg = audio[self.emitted - first * SAMPLES_PER_FRAME:].copy()  # from the first sample not yet emitted
        if self.tail is not None:
            n = min(len(self.tail), len(seg))
            seg[:n] = self.tail[:n] * (1 - self.fade[:n]) + seg[:n] * self.fade[:n]
        if last:
            self.tail = None
            out = seg
        else:
            keep = max(0, len(seg) - CROSSFADE - GUARD)
            out, self.tail = seg[:keep], seg[keep: keep + CROSSFADE]
        self.emitted += len(out)
        return np.ascontiguousarray(out, dtype=np.float32)
