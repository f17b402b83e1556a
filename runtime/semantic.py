"""Stage 1: text tokens -> semantic tokens (Bark's `generate_text_semantic`).

The first step feeds 256 text tokens (+ the infer token) with the voice's
last 256 semantic tokens merged onto the same positions; then one token per
step through the KV cache, up to 768 tokens. A row stops when it samples EOS,
when P(EOS) >= min_eos_p, or after max_gen_duration_s of audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from bark_onnx.kernels.sampling import sample

from .constants import (
    MAX_SEMANTIC_HISTORY, MAX_SEMANTIC_STEPS, SEMANTIC_INFER_TOKEN, SEMANTIC_PAD_TOKEN, SEMANTIC_RATE_HZ,
    SEMANTIC_VOCAB_SIZE,
)
from .decoder import CausalDecoder
from .errors import InputError

EOS = SEMANTIC_VOCAB_SIZE  # the pad token doubles as end of sequence


@dataclass(frozen=True)
class SemanticOptions:
    temperature: float | None = 0.7
    top_k: int | None = None
    top_p: float | None = None
    min_eos_p: float | None = 0.2
    max_gen_duration_s: float | None = None
    allow_early_stop: bool = True

    def __post_init__(self):
        check_sampling(self.temperature, self.top_k, self.top_p)
        if self.min_eos_p is not None and not 0 <= self.min_eos_p <= 1:
            raise InputError(f"min_eos_p must lie in [0, 1], got {self.min_eos_p}")
        if self.max_gen_duration_s is not None and self.max_gen_duration_s <= 0:
            raise InputError(f"max_gen_duration_s must be positive, got {self.max_gen_duration_s}")


def check_sampling(temperature, top_k, top_p) -> None:
    """Raise InputError for a temperature, top_k or top_p Bark cannot use."""
    if temperature is not None and not (isinstance(temperature, (int, float)) and temperature >= 0):
        raise InputError(f"temperature must be >= 0 (0 or None: greedy), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise InputError(f"top_k must be a positive integer, got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise InputError(f"top_p must lie in (0, 1], got {top_p!r}")


def semantic_history(voice: dict | None) -> np.ndarray:
    """The voice's last 256 semantic tokens, right-padded with the semantic pad (all pad without a voice)."""
    if voice is None:
        return np.full(MAX_SEMANTIC_HISTORY, SEMANTIC_PAD_TOKEN, dtype=np.int64)
    hist = voice["semantic_prompt"].astype(np.int64)[-MAX_SEMANTIC_HISTORY:]
    return np.pad(hist, (0, MAX_SEMANTIC_HISTORY - hist.size), constant_values=SEMANTIC_PAD_TOKEN)


def max_semantic_tokens(max_gen_duration_s: float | None) -> int:
    """Tokens kept before the duration limit stops a row: Bark adds 1/49.9 s per token and
    stops once the sum exceeds the limit, keeping that token (same float sums here)."""
    if max_gen_duration_s is None:
        return MAX_SEMANTIC_STEPS
    total, n = 0.0, 0
    while n < MAX_SEMANTIC_STEPS:
        n += 1
        total += 1 / SEMANTIC_RATE_HZ
        if total > max_gen_duration_s:
            break
    return n


def generate_semantic(decoder: CausalDecoder, text_tokens: np.ndarray, history: np.ndarray,
                      opts: SemanticOptions, rng: np.random.Generator | None,
                      silent: bool = False) -> list[np.ndarray]:
    """text_tokens (B, 256), history (256,) -> one semantic array per row."""
    batch = text_tokens.shape[0]
    infer = np.full((batch, 1), SEMANTIC_INFER_TOKEN, dtype=np.int64)
    none = np.full((batch, 1), decoder.info.merge_none_id, dtype=np.int64)
    decoder.start(batch)
    logits = decoder.forward(np.concatenate([text_tokens, infer], 1),
                             np.concatenate([np.broadcast_to(history, (batch, history.size)), none], 1))
    out = np.zeros((batch, MAX_SEMANTIC_STEPS), dtype=np.int64)
    length = np.zeros(batch, dtype=np.int64)
    active = np.ones(batch, dtype=bool)
    max_tokens = max_semantic_tokens(opts.max_gen_duration_s)
    n_cols = SEMANTIC_VOCAB_SIZE + 1 if opts.allow_early_stop else SEMANTIC_VOCAB_SIZE
    with tqdm(total=max_tokens, desc="semantic", unit="tok", disable=silent, leave=False) as bar:
        for n in range(max_tokens):
            tokens, probs = sample(logits[:, :n_cols], opts.temperature, rng, opts.top_k, opts.top_p)
            if opts.allow_early_stop:
                stop = tokens == EOS
                if opts.min_eos_p is not None:
                    stop |= probs[:, EOS] >= opts.min_eos_p
                active &= ~stop
            out[active, n] = tokens[active]
            length[active] += 1
            bar.update(1)
            if not active.any() or n == max_tokens - 1:
                break
            logits = decoder.forward(np.where(active, tokens, 0)[:, None])
    return [out[b, : length[b]].copy() for b in range(batch)]
