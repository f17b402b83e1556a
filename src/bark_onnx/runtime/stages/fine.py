"""Stage 3: coarse codes (2, T) -> all 8 EnCodec codebooks (8, T) (Bark's `generate_fine`).

The fine model is non-causal and sees windows of up to 1024 frames. Codebooks
2..7 start as pad (1024); the voice's fine prompt (last 512 frames) goes in
front. `fill_codebooks` is the one inner loop: in a window, codebooks
n_coarse..7 are predicted in order from the fill start on, each from the ones
before it. The one-shot `fine_loop` runs it over windows of 1024 with stride
512 (the last one clamped to the end); `ChunkedFine` runs it on the growing
coarse codes of a stream.
"""

from __future__ import annotations

import numpy as np

from bark_onnx.kernels.sampling import uniforms

from ..constants import CODEBOOK_SIZE, FINE_HISTORY, FINE_STRIDE, FINE_WINDOW, N_FINE_CODEBOOKS
from ..errors import InputError
from .progress import Progress
from .work import FinePass

FINE_LEFT = 256  # stream: frames of final context left of a chunk
FINE_RIGHT = 32  # stream: frames predicted as right context, finalized with the next chunk


def check_coarse(coarse) -> np.ndarray:
    """The fine stage's input: (n_codebooks <= 7, T > 0) codes in [0, 1024)."""
    arr = np.asarray(coarse)
    if arr.ndim != 2 or not 1 <= arr.shape[0] <= N_FINE_CODEBOOKS - 1 or arr.shape[1] == 0 or arr.dtype.kind not in "iu":
        raise InputError(f"coarse codes must be an integer array of shape (n_codebooks <= 7, T > 0), got {arr.shape}")
    if arr.min() < 0 or arr.max() >= CODEBOOK_SIZE:
        raise InputError(f"coarse codes must lie in [0, {CODEBOOK_SIZE}), got [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64)


def fine_history(voice: dict | None) -> np.ndarray:
    """The voice's last 512 frames of fine codes, (8, n) (no frames without a voice)."""
    if voice is None:
        return np.zeros((N_FINE_CODEBOOKS, 0), np.int64)
    return voice["fine_prompt"][:, -FINE_HISTORY:].astype(np.int64)


def fine_windows(n_frames: int, n_history: int) -> list[tuple[int, int]]:
    """(window start, fill start) per window, over an input of max(n_history + n_frames, 1024) frames."""
    total = max(n_history + n_frames, FINE_WINDOW)
    n_loops = max(0, int(np.ceil((n_frames - (FINE_WINDOW - n_history)) / FINE_STRIDE))) + 1
    return [(min(n * FINE_STRIDE, total - FINE_WINDOW), min(n_history + n * FINE_STRIDE, total - FINE_STRIDE))
            for n in range(n_loops)]


def fill_codebooks(window: np.ndarray, rel: int, n_coarse: int, temperature: float | None,
                   rng: np.random.Generator | None):
    """window (W, 8) codes, changed in place: codebooks n_coarse..7 drawn for frames rel..W (a
    uniform number per frame from `rng`, unless greedy), each from the ones before it."""
    for nn in range(n_coarse, N_FINE_CODEBOOKS):
        u = np.zeros(len(window))
        drawn = uniforms(rng, len(window) - rel, temperature)
        if drawn is not None:
            u[rel:] = drawn
        tokens = yield FinePass(window, nn, temperature, u)  # (W,)
        window[rel:, nn] = tokens[rel:]


def fine_loop(coarse: np.ndarray, voice: dict | None, temperature: float | None, rng: np.random.Generator | None,
              progress: Progress | None = None):
    """Work items in, fine codes (8, T) out."""
    n_coarse, n_frames = coarse.shape
    history = fine_history(voice)
    n_history = history.shape[1]
    codes = np.full((N_FINE_CODEBOOKS, max(n_history + n_frames, FINE_WINDOW)), CODEBOOK_SIZE, dtype=np.int64)
    codes[:, :n_history] = history
    codes[:n_coarse, n_history: n_history + n_frames] = coarse
    frames = np.ascontiguousarray(codes.T)  # (frames, 8): the graph's layout
    windows = fine_windows(n_frames, n_history)
    progress = progress or Progress.off()
    progress.start("fine", len(windows), "window")
    for start, fill in windows:
        window = frames[start: start + FINE_WINDOW].copy()
        yield from fill_codebooks(window, fill - start, n_coarse, temperature, rng)
        frames[start: start + FINE_WINDOW] = window
        progress.update()
    progress.close()
    return np.ascontiguousarray(frames.T[:, n_history: n_history + n_frames])


class ChunkedFine:
    """The fine stage on a stream's growing coarse codes: each call finalizes the frames it can.

    A chunk's window has up to FINE_LEFT already-final frames (or the voice's fine
    prompt) on its left and FINE_RIGHT frames of right context that are
    predicted but held back until the next chunk (the model is non-causal: a
    frame's codes depend on the frames after it).
    """

    def __init__(self, voice: dict | None, temperature: float | None, rng: np.random.Generator | None):
        self.temperature, self.rng = temperature, rng
        self.codes = fine_history(voice)  # (8, n_history + frames so far)
        self.n_history = self.codes.shape[1]
        self.final = 0  # frames (after the history) whose fine codes are final

    def extend(self, coarse: np.ndarray, last: bool, right: int = FINE_RIGHT):
        """coarse: all (n_coarse, T) frames so far. Work items in, the newly final codes (8, n) out;
        the last `right` frames are predicted as context and held back (unless `last`)."""
        n_coarse, total = coarse.shape
        known = self.codes.shape[1] - self.n_history
        if total > known:  # append the new frames: coarse rows known, the rest pad
            new = np.full((N_FINE_CODEBOOKS, total - known), CODEBOOK_SIZE, np.int64)
            new[:n_coarse] = coarse[:, known:]
            self.codes = np.hstack([self.codes, new])
        end = self.n_history + total
        fill = self.n_history + self.final
        done = total if last else max(self.final, total - right)
        if done == self.final:
            return np.zeros((N_FINE_CODEBOOKS, 0), np.int64)
        self.codes[n_coarse:, fill:end] = CODEBOOK_SIZE  # provisional predictions are redone from scratch
        start = max(0, fill - FINE_LEFT)
        window = np.ascontiguousarray(self.codes[:, start:end].T)  # (W, 8)
        yield from fill_codebooks(window, fill - start, n_coarse, self.temperature, self.rng)
        self.codes[:, start:end] = window.T
        out = self.codes[:, fill: self.n_history + done].copy()
        self.final = done
        return out

    @property
    def result(self) -> np.ndarray:
        """The final fine codes of the whole stream, (8, frames)."""
        return self.codes[:, self.n_history: self.n_history + self.final].copy()
