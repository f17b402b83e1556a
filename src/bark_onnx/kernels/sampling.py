"""Bark's sampling rules in NumPy: top-p, top-k, temperature, and draws from uniform numbers.

Every draw is an inverse CDF: one uniform number u in [0, 1) per row, and the
token is the first whose cumulative probability exceeds u times the row's
total. The uniforms come from the request's own `numpy.random.Generator`, one
per token in the order the tokens are drawn (`uniforms`), so a seed reproduces
a run, alone or among other requests. A temperature of 0 or None means greedy
(argmax) and uses no uniform.

Two implementations of the same rule:

- `draw_rows`, float32: what the graphs compute on the device that holds the
  logits, by blocks of columns (export/sampling_head.py builds it from ONNX ops;
  the tests compare the two). Every row of a decoding step, and every position of
  a fine window, is drawn this way unless it filters its logits.
- `sample`, float64: rows with top-k or top-p, whose logits come to the host
  (Bark filters with a sort, which the graphs do not do).

The two can differ where float32 and float64 round a cumulative sum to either
side of u; benchmarks/README.md measures how often.
"""

from __future__ import annotations

import numpy as np

# The largest float32 below 1: a float64 uniform just under 1 must not round up to 1 in float32.
U_MAX32 = np.nextafter(np.float32(1), np.float32(0))


def is_greedy(temperature: float | None) -> bool:
    """0 or None. So is a temperature so small that logits / T would overflow float32: its draws are
    the argmax anyway, since the noise vanishes beside the scaled logits. A float32 bound for every
    graph: fp16 graphs scale their logits by 1 / T in float32 too (export/sampling_head.py)."""
    return temperature is None or temperature < 1e-30


def graph_temperature(temperature: float | None) -> np.float32:
    """A temperature as the graphs take it: 0 for greedy; past float32's range, its largest value
    (the T -> inf limit: every token as likely)."""
    if is_greedy(temperature):
        return np.float32(0)
    return np.float32(min(float(temperature), float(np.finfo(np.float32).max)))


def uniforms(rng: np.random.Generator | None, n: int, temperature: float | None) -> np.ndarray | None:
    """The n uniform numbers of n draws, in order (None for greedy decoding, which draws none).
    `rng.random(n)` gives the same numbers as n calls of `rng.random()`."""
    if is_greedy(temperature):
        return None
    if rng is None:
        raise ValueError("sampling with a temperature needs a random generator")
    return rng.random(n)


def as_float32_uniform(u) -> np.ndarray:
    return np.minimum(np.asarray(u, dtype=np.float32), U_MAX32)


def block_shape(n: int) -> tuple[int, int]:
    """(blocks, block size) of n columns: the factor pair of n nearest its square root (10 001 = 73 x
    137, 2048 = 32 x 64), so that a draw scans one block, not all n columns."""
    best = max(d for d in range(1, int(np.sqrt(n)) + 1) if n % d == 0)
    return best, n // best


def last_positive(x: np.ndarray) -> np.ndarray:
    """(R,) int64: the last index of each row of x (R, m) that holds a positive value (0 if none).

    A scan stops there when rounding leaves u * total at or past every cumulative sum (u just under
    1, or a block's own sum that falls short of the total's): the draw then takes the last token
    that has probability, never a column after it (outside the band, or of probability 0)."""
    return np.max(np.where(x > 0, np.arange(x.shape[1]), 0), axis=1)


def draw_rows(logits: np.ndarray, temperature, uniform, band: np.ndarray | None = None,
              eos: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The graphs' draw in float32: tokens (R,) column indices, and P(eos) (R,) when `eos` is given.

    logits (R, V); temperature (R,) (0: greedy); uniform (R,); band (R, 2): the columns [lo, hi) a
    row draws from (None: all). P(eos) is 0 or 1 for a greedy row (the T -> 0 limit). The
    arithmetic is export/sampling_head.py's, by blocks of columns (see there). For every u in [0, 1)
    the token has probability > 0, so it lies in the row's band (see last_positive)."""
    x = np.asarray(logits, dtype=np.float32)
    rows, n = x.shape
    nb, bs = block_shape(n)
    t = np.broadcast_to(np.asarray(temperature, dtype=np.float32), (rows,))
    u = as_float32_uniform(np.broadcast_to(np.asarray(uniform, dtype=np.float32), (rows,)))
    sampled = t > 0
    r = np.arange(rows)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        z = x / np.where(sampled, t, np.float32(1))[:, None]
        if band is not None:
            cols = np.arange(n)
            band = np.asarray(band, dtype=np.int64)
            z = z + np.where((cols >= band[:, :1]) & (cols < band[:, 1:2]), np.float32(0), np.float32(-np.inf))
        z3 = z.reshape(rows, nb, bs)
        best = np.argmax(z3.max(axis=2), axis=1)
        greedy = best * bs + np.argmax(z3[r, best], axis=1)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        probs = (e / e.sum(axis=1, keepdims=True, dtype=np.float32)).astype(np.float32)
    p3 = probs.reshape(rows, nb, bs)
    mass = p3.sum(axis=2, dtype=np.float32)
    block_cdf = np.cumsum(mass, axis=1, dtype=np.float32)
    threshold = (u * block_cdf[:, -1]).astype(np.float32)[:, None]
    block = np.minimum(np.count_nonzero(block_cdf <= threshold, axis=1), last_positive(mass))
    before = np.concatenate([np.zeros((rows, 1), np.float32), block_cdf], axis=1)[r, block][:, None]
    in_block = p3[r, block]
    local = np.cumsum(in_block, axis=1, dtype=np.float32) + before
    column = np.minimum(np.count_nonzero(local <= threshold, axis=1), last_positive(in_block))
    tokens = np.where(sampled, block * bs + column, greedy).astype(np.int64)
    if eos is None:
        return tokens, None
    return tokens, np.where(sampled, probs[:, eos], (greedy == eos).astype(np.float32)).astype(np.float32)


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


def inverse_cdf(probs: np.ndarray, uniform) -> np.ndarray:
    """One draw per row from probabilities (B, V) (rows summing to 1), as int64 indices: the first
    index whose cumulative probability exceeds the row's uniform number. A token of probability 0 is
    never drawn."""
    cdf = np.cumsum(probs, axis=-1)
    u = np.asarray(uniform, dtype=np.float64).reshape(cdf.shape[:-1] + (1,)) * cdf[..., -1:]  # scaled by the sum
    return np.argmax(cdf > u, axis=-1).astype(np.int64)


def sample(logits: np.ndarray, temperature: float | None, uniform=None, top_k: int | None = None,
           top_p: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw one token per row in float64, filtering first; returns (tokens (B,), probabilities (B, V)).

    uniform: (B,) numbers in [0, 1), one per row (unused when greedy). The probabilities are those
    the draw used, softmax(filtered / T); for greedy decoding they are the T -> 0 limit, a one-hot
    row at the argmax.
    """
    x = filter_logits(logits, top_k, top_p)
    if is_greedy(temperature):
        tokens = np.argmax(x, axis=-1).astype(np.int64)
        probs = np.zeros_like(x)
        np.put_along_axis(probs, tokens[..., None], 1.0, axis=-1)
        return tokens, probs
    if uniform is None:
        raise ValueError("sampling with a temperature needs uniform numbers")
    probs = softmax(x / float(temperature))
    return inverse_cdf(probs, uniform), probs
