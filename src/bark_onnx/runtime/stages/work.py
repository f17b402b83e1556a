"""The graph work a request asks for, one item at a time.

Each stage's loop is a generator: it yields one of these items, the engine
runs it (batched with the items of other requests when their shapes allow)
and sends the result back in. So one loop serves a lone call and a thousand
concurrent ones, and the loop never touches a session or a cache itself.

    item               result sent back
    Prefill(stage, …)  logits (V,) of the last position; the request's cache row holds the prompt
                       (positions it shares with the row's previous prompt are kept, not recomputed)
    Step(stage, token) logits (V,) after one more token
    Release(stage)     None; the request's cache row of that stage is free again
    FinePass(codes, i) logits (W, 1024) of codebook i for a window of codes (W, 8)
    Decode(codes)      audio (T * 320,) float32 for codes (8, T)
    Emit(audio)        None; a chunk for the caller of a stream
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Prefill:
    stage: str  # "semantic" or "coarse"
    ids: np.ndarray  # (S,) int64
    merge: np.ndarray | None = None  # (S,) semantic graph only: a second token summed at each position


@dataclass
class Step:
    stage: str
    token: int


@dataclass
class Release:
    stage: str


@dataclass
class FinePass:
    codes: np.ndarray  # (W, 8) int64
    pred_idx: int


@dataclass
class Decode:
    codes: np.ndarray  # (8, T) int64


@dataclass
class Emit:
    audio: np.ndarray
