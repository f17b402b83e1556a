"""Sampling kernels against a direct transcription of Bark's torch code, over shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bark_onnx.kernels import sampling as S


def bark_filter(logits: np.ndarray, top_k=None, top_p=None) -> np.ndarray:
    """Bark's own filtering (generation.py), row by row."""
    out = []
    for row in logits:
        relevant = row.astype(np.float64).copy()
        if top_p is not None:
            order = np.argsort(relevant)[::-1]
            cum = np.cumsum(F.softmax(torch.from_numpy(relevant[order]), dim=-1).numpy())
            remove = cum > top_p
            remove[1:] = remove[:-1].copy()
            remove[0] = False
            relevant[order[remove]] = -np.inf
        if top_k is not None:
            t = torch.from_numpy(relevant)
            v, _ = torch.topk(t, min(top_k, t.size(-1)))
            t[t < v[-1]] = -float("inf")
            relevant = t.numpy()
        out.append(relevant)
    return np.stack(out)


@pytest.mark.parametrize("shape", [(1, 10), (3, 1024), (2, 10_001)])
@pytest.mark.parametrize("top_k,top_p", [(None, None), (5, None), (None, 0.5), (50, 0.9), (1, None), (None, 1.0)])
def test_filters_match_bark(shape, top_k, top_p):
    logits = np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32) * 3
    got = S.filter_logits(logits, top_k, top_p)
    np.testing.assert_array_equal(np.isinf(got), np.isinf(bark_filter(logits, top_k, top_p)))
    np.testing.assert_allclose(got[np.isfinite(got)], logits[np.isfinite(got)], rtol=1e-6)


def test_top_p_keeps_the_token_that_crosses():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    kept = np.isfinite(S.top_p_filter(logits, 0.6))
    assert kept.tolist() == [[True, True, False, False]]


def test_greedy_is_argmax_with_one_hot_probs():
    logits = np.random.default_rng(0).normal(size=(4, 300))
    for temp in (0, None):
        tokens, probs = S.sample(logits, temp, None)
        np.testing.assert_array_equal(tokens, logits.argmax(-1))
        assert (probs.sum(-1) == 1).all() and (probs[np.arange(4), tokens] == 1).all()


def test_draws_follow_softmax_of_logits_over_temperature():
    logits = np.array([[2.0, 1.0, 0.0, -1.0, -np.inf]])
    rng = np.random.default_rng(1)
    n = 40_000
    draws = S.sample(np.repeat(logits, n, 0), 0.7, rng)[0]
    freq = np.bincount(draws, minlength=5) / n
    expected = S.softmax(logits / 0.7)[0]
    assert freq[4] == 0
    np.testing.assert_allclose(freq, expected, atol=0.01)


def test_seeded_draws_repeat_and_differ_by_seed():
    logits = np.random.default_rng(0).normal(size=(1024, 1024))
    a = S.sample_tokens(logits, 0.5, np.random.default_rng(7))
    b = S.sample_tokens(logits, 0.5, np.random.default_rng(7))
    c = S.sample_tokens(logits, 0.5, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.1
    assert a.shape == (1024,) and a.dtype == np.int64


def test_seeded_steps_repeat_and_sample_their_rows_alone():
    """`sample` (one uniform number per row): the same seed gives the same tokens, and a row's token
    and probabilities do not depend on the rows drawn beside it (other logits, other filters' effect)."""
    logits = np.random.default_rng(0).normal(size=(3, 10_000))
    a = [S.sample(logits[i:i + 1], 0.7, np.random.default_rng(i))[0][0] for i in range(3)]
    b = [S.sample(logits[i:i + 1], 0.7, np.random.default_rng(i))[0][0] for i in range(3)]
    assert a == b
    for seed in range(20):
        alone, p_alone = S.sample(logits[:1], 0.7, np.random.default_rng(seed))
        beside, p_beside = S.sample(np.vstack([logits[:1], 50 * logits[1:]]), 0.7, np.random.default_rng(seed))
        assert beside[0] == alone[0]  # row 0 draws the first uniform number either way
        np.testing.assert_array_equal(p_beside[0], p_alone[0])
    tokens = S.sample(logits, 0.7, np.random.default_rng(5), top_k=50)[0]
    kth = np.sort(logits, axis=-1)[:, -50][:, None]
    assert (logits[np.arange(3), tokens] >= kth[:, 0]).all()  # only top-k tokens are drawn


def test_inverse_cdf_never_draws_a_zero_probability_token():
    probs = np.array([[0.0, 0.5, 0.0, 0.5, 0.0]] * 20_000)
    draws = S.inverse_cdf(probs, np.random.default_rng(2))
    assert set(np.unique(draws)) == {1, 3} and abs((draws == 1).mean() - 0.5) < 0.02


def test_sampling_without_a_generator_is_refused():
    with pytest.raises(ValueError, match="random generator"):
        S.sample(np.zeros((1, 3)), 0.7, None)


def test_a_temperature_past_float32_draws_evenly_without_a_warning():
    import warnings

    logits = np.tile(np.array([[8.0, 0.0, -8.0, 0.0]], np.float32), (40_000, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow in the float32 cast would raise here
        draws = S.sample_tokens(logits, 1e300, np.random.default_rng(0))
    counts = np.bincount(draws, minlength=4) / len(draws)
    assert np.abs(counts - 0.25).max() < 0.02  # the T -> inf limit: every token as likely
