"""The graph work a request asks for, one item at a time.

Each stage's loop is a generator: it yields one of these items, the engine
runs it (batched with the items of other requests when their shapes allow)
and sends the result back in. So one loop serves a lone call and a thousand
concurrent ones, and the loop never touches a session or a cache itself.

    item                 result sent back
    Generate(stage, …)   the token ids drawn, (n,) int64: a prefill of the request's cache row (positions
                         it shares with the row's previous prompt are kept, not recomputed), then one
                         token per step, each fed back, until a stop rule or `max_new`. The request's own
                         code does not run in between: its stop rules are data the engine checks in bulk
    Spawn(Generate)      None, at once: the run goes on in the background (a stream's semantic stage
                         while its coarse windows start)
    Await(stage, n)      RunTokens(tokens so far, ended): once the background run of `stage` has n
                         tokens or has ended
    Release(stage)       None; the request's cache row of that stage is free again
    FinePass(codes, i)   tokens (W,) of codebook i drawn for a window of codes (W, 8)
    Decode(codes)        audio (T * 320,) float32 for codes (8, T)
    Emit(audio)          None; a chunk for the caller of a stream
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class Generate:
    """A decoding run of a causal stage ("semantic" or "coarse").

    Draw k takes uniforms[k] (None: greedy, which draws none) and the logits columns of
    band bands[k] (the graph's GraphInfo.bands: semantic 0 with EOS, 1 without; coarse the
    codebook); with top_k or top_p its logits come to the host and are filtered
    there (Bark's float64 rule), else the graph draws it. A draw of the token `eos`, or
    one whose P(eos) reaches `min_eos_p`, ends the run and is not kept.
    """

    stage: str
    ids: np.ndarray  # (S,) int64, the prompt
    max_new: int  # draws at most
    temperature: float | None
    uniforms: np.ndarray | None  # (max_new,) float64, the request's own draws in order
    bands: np.ndarray  # (max_new,) int64 band indices
    merge: np.ndarray | None = None  # (S,) semantic graph only: a second token summed at each position
    top_k: int | None = None
    top_p: float | None = None
    eos: int | None = None  # a token id that ends the run
    min_eos_p: float | None = None
    progress: Callable[[int], None] | None = None  # told the tokens drawn so far, now and then


@dataclass
class Spawn:
    run: Generate


@dataclass
class Await:
    stage: str
    n: int  # tokens wanted


@dataclass
class RunTokens:
    """An Await's reply: the background run's tokens so far, and whether it has ended."""

    tokens: np.ndarray  # (n,) int64
    ended: bool


@dataclass
class Release:
    stage: str


@dataclass
class FinePass:
    codes: np.ndarray  # (W, 8) int64
    pred_idx: int
    temperature: float | None  # None or 0: greedy
    uniforms: np.ndarray  # (W,) float64, one per position (those not drawn: anything)


@dataclass
class Decode:
    codes: np.ndarray  # (8, T) int64


@dataclass
class Emit:
    audio: np.ndarray
