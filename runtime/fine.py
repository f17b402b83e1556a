"""Stage 3: coarse codes (2, T) -> all 8 EnCodec codebooks (8, T) (Bark's `generate_fine`).

The fine model is non-causal and sees windows of 1024 frames. Codebooks 2..7
start as pad (1024); the voice's fine prompt (last 512 frames) goes in front;
the input is right-padded to 1024. Windows advance by 512 (the last one is
clamped to the end); in each, codebooks n_coarse..7 are predicted in order
from the fill start on, each from the ones before it.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from tqdm.auto import tqdm

from bark_onnx.kernels.sampling import sample_tokens

from .constants import CODEBOOK_SIZE, FINE_HISTORY, FINE_STRIDE, FINE_WINDOW, N_FINE_CODEBOOKS
from .errors import InputError


def check_coarse(coarse) -> np.ndarray:
    arr = np.asarray(coarse)
    if arr.ndim != 2 or not 1 <= arr.shape[0] <= N_FINE_CODEBOOKS - 1 or arr.shape[1] == 0 or arr.dtype.kind not in "iu":
        raise InputError(f"coarse codes must be an integer array of shape (n_codebooks <= 7, T > 0), got {arr.shape}")
    if arr.min() < 0 or arr.max() >= CODEBOOK_SIZE:
        raise InputError(f"coarse codes must lie in [0, {CODEBOOK_SIZE}), got [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64)


def fine_windows(n_frames: int, n_history: int) -> list[tuple[int, int]]:
    """(window start, fill start) per window, over an input of max(n_history + n_frames, 1024) frames."""
    total = max(n_history + n_frames, FINE_WINDOW)
    n_loops = max(0, int(np.ceil((n_frames - (FINE_WINDOW - n_history)) / FINE_STRIDE))) + 1
    return [(min(n * FINE_STRIDE, total - FINE_WINDOW), min(n_history + n * FINE_STRIDE, total - FINE_STRIDE))
            for n in range(n_loops)]


def generate_fine(session: ort.InferenceSession, coarse: list[np.ndarray], voice: dict | None,
                  temperature: float | None, rng: np.random.Generator | None, silent: bool = True) -> list[np.ndarray]:
    """Coarse rows of equal length -> one (8, T) array per row; windows run batched over rows."""
    n_coarse, n_frames = coarse[0].shape
    history = voice["fine_prompt"][:, -FINE_HISTORY:].astype(np.int64) if voice is not None else None
    n_history = 0 if history is None else history.shape[1]
    pad_rows = np.full((N_FINE_CODEBOOKS - n_coarse, n_frames), CODEBOOK_SIZE, dtype=np.int64)
    rows = []
    for codes in coarse:
        arr = np.vstack([codes, pad_rows])
        if history is not None:
            arr = np.hstack([history, arr])
        rows.append(arr)
    codes_all = np.stack(rows)  # (B, 8, n_history + T)
    n_pad = max(0, FINE_WINDOW - codes_all.shape[2])
    if n_pad:
        codes_all = np.concatenate(
            [codes_all, np.full((len(rows), N_FINE_CODEBOOKS, n_pad), CODEBOOK_SIZE, dtype=np.int64)], 2)
    work = np.ascontiguousarray(codes_all.transpose(0, 2, 1))  # (B, frames, 8): the graph's layout
    windows = fine_windows(n_frames, n_history)
    for start, fill in tqdm(windows, desc="fine", unit="window", disable=silent, leave=False):
        rel = fill - start
        for nn in range(n_coarse, N_FINE_CODEBOOKS):
            window = np.ascontiguousarray(work[:, start: start + FINE_WINDOW])
            logits = session.run(None, {"codes": window, "pred_idx": np.array(nn, dtype=np.int64)})[0]
            work[:, fill: start + FINE_WINDOW, nn] = sample_tokens(logits[:, rel:], temperature, rng)
    out = work.transpose(0, 2, 1)[:, :, n_history: n_history + n_frames]
    return [np.ascontiguousarray(o) for o in out]
