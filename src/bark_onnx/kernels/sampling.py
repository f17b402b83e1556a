"""Bark's sampling rules in NumPy: top-p, top-k, temperature, and seeded draws.

Every stage samples through `sample` or `sample_tokens`. Rows are
independent: logits are (B, V) and the result is (B,). A temperature of 0 or
None means greedy (argmax). Two exact ways to draw from softmax(logits / T):

- `sample` (semantic and coarse, a few rows a step) needs the probabilities
  anyway (the semantic stage stops on P(EOS)), so it draws by inverse CDF: one
  uniform number per row against their cumulative sum;
- `sample_tokens` (the fine stage, 1024 x 1024 at once, no probabilities
  needed) uses the Gumbel-max trick: argmax(logits / T + Gumbel noise), no
  exponentials to normalise and no cumulative sums.

All randomness comes from the caller's `numpy.random.Generator`, so a seed
reproduces a run.
"""

from __future__ import annotations

import numpy as np


def is_greedy(temperature: float | None) -> bool:
    """0 or None. So is a temperature so small that logits / T would overflow: its draws are the
    argmax anyway, since the noise vanishes beside the scaled logits."""
    return temperature is None or temperature < 1e-30


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax in float64 (rows of -inf give 0 where a row has a finite value)."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(x)
    return e / np.sum(e, axis=axis, keepdims=True)


def top_p_filter(logits: np.ndarray, top_p: float) -> np.ndarray:
    """Keep the smallest set of tokens whose probability reaches top_p (on the raw logits).

    As in Bark: sort descending, drop tokens after the cumulative probability
    first exceeds top_p (the token that crosses it is kept), set them to -inf.
    """
    x = np.array(logits, dtype=np.float64, copy=True)
    order = np.argsort(x, axis=-1)[..., ::-1]  # descending
    sorted_logits = np.take_along_axis(x, order, axis=-1)
    cumulative = np.cumsum(softmax(sorted_logits), axis=-1)
    remove = cumulative > top_p
    remove[..., 1:] = remove[..., :-1].copy()  # keep the token that crosses top_p
    remove[..., 0] = False
    np.put_along_axis(x, order, np.where(remove, -np.inf, sorted_logits), axis=-1)
    return x


def top_k_filter(logits: np.ndarray, top_k: int) -> np.ndarray:
    """Set every logit below the k-th largest of its row to -inf (ties at the k-th are kept)."""
    x = np.array(logits, dtype=np.float64, copy=True)
    k = min(int(top_k), x.shape[-1])
    kth = np.partition(x, -k, axis=-1)[..., -k][..., None]
    x[x < kth] = -np.inf
    return x


def filter_logits(logits: np.ndarray, top_k: int | None = None, top_p: float | None = None) -> np.ndarray:
    """Bark's order: top-p first, then top-k."""
    x = np.asarray(logits, dtype=np.float64)
    if top_p is not None:
        x = top_p_filter(x, top_p)
    if top_k is not None:
        x = top_k_filter(x, top_k)
    return x


def gumbel_argmax(scaled_logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row from softmax(scaled_logits), as int64 indices.

    Gumbel noise is -log(E) with E ~ Exp(1); NumPy draws float32 exponentials
    several times faster than float64 Gumbel variates, which matters for the
    fine stage's million draws per codebook.
    """
    exponential = rng.standard_exponential(size=scaled_logits.shape, dtype=np.float32)
    np.maximum(exponential, np.finfo(np.float32).tiny, out=exponential)  # a draw of 0 would give +inf noise
    return np.argmax(scaled_logits - np.log(exponential), axis=-1).astype(np.int64)


def inverse_cdf(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row from probabilities (B, V) (rows summing to 1), as int64 indices: the first
    index whose cumulative probability exceeds a uniform draw. A token of probability 0 is never drawn."""
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random(cdf.shape[:-1] + (1,)) * cdf[..., -1:]  # scaled by the row's sum: rounding cannot overrun it
    return np.argmax(cdf > u, axis=-1).astype(np.int64)


def sample(logits: np.ndarray, temperature: float | None, rng: np.random.Generator | None,
           top_k: int | None = None, top_p: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw one token per row; returns (tokens (B,), probabilities (B, V)).

    The probabilities are those the draw used, softmax(filtered / T); for
    greedy decoding they are the T -> 0 limit, a one-hot row at the argmax.
    """
    x = filter_logits(logits, top_k, top_p)
    if is_greedy(temperature):
        tokens = np.argmax(x, axis=-1).astype(np.int64)
        probs = np.zeros_like(x)
        np.put_along_axis(probs, tokens[..., None], 1.0, axis=-1)
        return tokens, probs
    if rng is None:
        raise ValueError("sampling with a temperature needs a random generator")
    probs = softmax(x / float(temperature))
    return inverse_cdf(probs, rng), probs


def sample_tokens(logits: np.ndarray, temperature: float | None, rng: np.random.Generator | None) -> np.ndarray:
    """Tokens only, for any leading shape (the fine stage's (T, V) windows); no filtering."""
    if is_greedy(temperature):
        return np.argmax(logits, axis=-1).astype(np.int64)
    if rng is None:
        raise ValueError("sampling with a temperature needs a random generator")
    # a temperature past float32's range is its T -> inf limit (every token as likely), without an overflow
    t = np.float32(min(float(temperature), float(np.finfo(np.float32).max)))
    return gumbel_argmax(np.asarray(logits, dtype=np.float32) / t, rng)
