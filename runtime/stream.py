"""Streaming: audio chunks as soon as they can be decoded, long before the coarse stage ends.

The semantic stage runs first; the coarse windows then run one by one, and
whenever enough new coarse frames exist the fine stage and the codec run on
that chunk:

- fine: a window of up to FINE_LEFT already-final frames (or the voice's fine
  prompt), the new frames, and FINE_RIGHT frames of right context that are
  predicted but held back until the next chunk (the fine model is
  non-causal: a frame's codes depend on the frames after it);
- codec: the chunk's frames with CODEC_LEFT frames of left context, the last
  CROSSFADE samples held back and crossfaded with the next chunk's decode of
  the same samples, so joins are click-free.

Semantic and coarse tokens are the same as one-shot generation for the same
seed (each stage has its own random stream). Fine codes differ where a chunk
saw less context than the one-shot window (and in their random draws), and
the audio differs accordingly; see the README for the measured difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from bark_onnx.kernels.sampling import sample_tokens

from .constants import CODEBOOK_SIZE, FINE_HISTORY, N_FINE_CODEBOOKS, SAMPLES_PER_FRAME

FINE_LEFT = 256  # frames of final context left of a chunk
FINE_RIGHT = 32  # frames predicted as right context, finalized with the next chunk
CODEC_LEFT = 32  # frames decoded before a chunk to settle the codec's convolutions and LSTM
CROSSFADE = 480  # samples (20 ms) blended between consecutive codec chunks
# The transposed convolutions leave the last ~2 frames of a decode without the
# next frame's overlap: those samples are never emitted, the next decode redoes them.
GUARD = 2 * SAMPLES_PER_FRAME
FIRST_CHUNK = 30  # frames (0.4 s) in the first chunk; later chunks double up to MAX_CHUNK
MAX_CHUNK = 240


@dataclass
class StreamState:
    """Fine codes (8, n_history + T) grown chunk by chunk, and what has been made final."""

    codes: np.ndarray
    n_history: int
    final: int  # frames (after the history) whose fine codes are final


class ChunkedFine:
    """Runs the fine graph on chunks of coarse frames (one row, no batch)."""

    def __init__(self, session, voice: dict | None, temperature, rng):
        self.session, self.temperature, self.rng = session, temperature, rng
        history = voice["fine_prompt"][:, -FINE_HISTORY:].astype(np.int64) if voice is not None else None
        n_history = 0 if history is None else history.shape[1]
        codes = history if history is not None else np.zeros((N_FINE_CODEBOOKS, 0), np.int64)
        self.state = StreamState(codes, n_history, 0)

    def extend(self, coarse: np.ndarray, last: bool) -> np.ndarray:
        """coarse: all (2, T) frames so far. Returns the fine codes (8, n) made final by this call."""
        st = self.state
        n_coarse, total = coarse.shape
        known = st.codes.shape[1] - st.n_history
        if total > known:  # append the new frames: coarse rows known, the rest pad
            new = np.full((N_FINE_CODEBOOKS, total - known), CODEBOOK_SIZE, np.int64)
            new[:n_coarse] = coarse[:, known:]
            st.codes = np.hstack([st.codes, new])
        end = st.n_history + total
        fill = st.n_history + st.final
        done = total if last else max(st.final, total - FINE_RIGHT)
        if done == st.final:
            return np.zeros((N_FINE_CODEBOOKS, 0), np.int64)
        st.codes[n_coarse:, fill:end] = CODEBOOK_SIZE  # provisional predictions are redone from scratch
        start = max(0, fill - FINE_LEFT)
        window = np.ascontiguousarray(st.codes[:, start:end].T[None])  # (1, W, 8)
        rel = fill - start
        for nn in range(n_coarse, N_FINE_CODEBOOKS):
            logits = self.session.run(None, {"codes": window, "pred_idx": np.array(nn, dtype=np.int64)})[0]
            window[0, rel:, nn] = sample_tokens(logits[0, rel:], self.temperature, self.rng)
        st.codes[:, start:end] = window[0].T
        out = st.codes[:, fill: st.n_history + done].copy()
        st.final = done
        return out


class ChunkedCodec:
    """Decodes fine codes chunk by chunk with left context and crossfaded joins."""

    def __init__(self, session):
        self.session = session
        self.codes = np.zeros((N_FINE_CODEBOOKS, 0), np.int64)
        self.emitted = 0  # samples
        self.tail: np.ndarray | None = None
        self.fade = np.linspace(0.0, 1.0, CROSSFADE, dtype=np.float32)

    def extend(self, fine: np.ndarray, last: bool) -> np.ndarray:
        if fine.shape[1] == 0 and not last:
            return np.zeros(0, np.float32)
        self.codes = np.hstack([self.codes, fine])
        # decode from CODEC_LEFT frames before the first sample still to emit
        first = max(0, self.emitted // SAMPLES_PER_FRAME - CODEC_LEFT)
        audio = self.session.run(None, {"codes": np.ascontiguousarray(self.codes[None, :, first:])})[0][0]
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


def chunk_schedule(first: int = FIRST_CHUNK, largest: int = MAX_CHUNK) -> Iterator[int]:
    """Frames per chunk: small first (fast first audio), then doubling (less recomputation)."""
    size = first
    while True:
        yield size
        size = min(largest, size * 2)


def stream_chunks(coarse_iter, fine: ChunkedFine, codec: ChunkedCodec) -> Iterator[np.ndarray]:
    """Drive the chunked fine and codec stages from the coarse windows of one row."""
    sizes = chunk_schedule()
    target = next(sizes)
    coarse = None
    for rows in coarse_iter:
        coarse = rows[0]
        if coarse.shape[1] - fine.state.final >= target + FINE_RIGHT:
            audio = codec.extend(fine.extend(coarse, last=False), last=False)
            if audio.size:
                yield audio
            target = next(sizes)
    if coarse is not None:
        audio = codec.extend(fine.extend(coarse, last=True), last=True)
        if audio.size:
            yield audio
