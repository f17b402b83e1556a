"""Hostile option values through the public entry points: success or a BarkOnnxError, nothing else.

Temperatures, top_k, top_p, min_eos_p, max_gen_duration_s and seeds drawn
from negative, NaN, infinite, huge, wrong-typed and numpy-scalar values, given
to text_to_semantic, semantic_to_coarse, coarse_to_fine, generate and stream.
The plain tests below pin the values that once slipped through or crashed.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bark_onnx import Bark, BarkOnnxError

from .conftest import succeeds_or_bark_error

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
SHORT = dict(max_gen_duration_s=0.05, silent=True)  # a few semantic tokens: quick on the tiny model

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2 ** 70), 2 ** 70),
    st.floats(width=32, allow_nan=True, allow_infinity=True).map(np.float32),
    st.floats(allow_nan=True, allow_infinity=True).map(np.float64),
    st.integers(-(2 ** 63), 2 ** 63 - 1).map(np.int64),
    st.sampled_from([None, True, False, "1", "0.5", "", [], [0.5], {}, b"1", 1j, object()]),
)
seeds = values | st.integers(0, 2 ** 32).map(np.random.default_rng)



@pytest.fixture(scope="module")
def tiny(tts) -> Bark:
    return tts["suno-tiny"]


@pytest.fixture(scope="module")
def semantic(tiny) -> np.ndarray:
    return tiny.text_to_semantic("hello", seed=0, **SHORT)


@settings(max_examples=60, **SETTINGS)
@given(name=st.sampled_from(["temperature", "top_k", "top_p", "min_eos_p", "max_gen_duration_s", "seed"]),
       value=seeds)
def test_text_to_semantic_options(name, value, tiny):
    options = dict(SHORT, **{name: value})
    tokens = succeeds_or_bark_error(tiny.text_to_semantic, "hello", **options)
    assert tokens is None or tokens.ndim == 1


@settings(max_examples=40, **SETTINGS)
@given(name=st.sampled_from(["temperature", "top_k", "top_p", "seed"]), value=seeds)
def test_semantic_to_coarse_options(name, value, tiny, semantic):
    codes = succeeds_or_bark_error(tiny.semantic_to_coarse, semantic, silent=True, **{name: value})
    assert codes is None or codes.shape[0] == 2


@settings(max_examples=15, **SETTINGS)
@given(name=st.sampled_from(["temperature", "seed"]), value=seeds)
def test_coarse_to_fine_options(name, value, tiny):
    codes = succeeds_or_bark_error(tiny.coarse_to_fine, np.zeros((2, 4), np.int64), **{name: value})
    assert codes is None or (codes.shape == (8, 4) and codes.max() < 1024)


@settings(max_examples=25, **SETTINGS)
@given(name=st.sampled_from(["text_temperature", "waveform_temperature", "fine_temperature", "seed", "top_k",
                             "top_p", "min_eos_p", "max_gen_duration_s"]), value=seeds)
def test_stream_options(name, value, tiny):
    options = dict(SHORT, **{name: value})
    chunks = succeeds_or_bark_error(lambda: list(tiny.stream("hello", **options)))
    assert chunks is None or all(c.dtype == np.float32 for c in chunks)


@settings(max_examples=6, **SETTINGS)  # a valid value runs the whole pipeline (seconds)
@given(name=st.sampled_from(["text_temperature", "waveform_temperature", "fine_temperature", "seed"]),
       value=seeds)
def test_generate_options(name, value, tiny):
    audio = succeeds_or_bark_error(tiny.generate, "hello", silent=True, **{name: value})
    assert audio is None or audio.dtype == np.float32


# The values once seen to crash or to be accepted with a wrong result.
@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), "0.5"])
def test_bad_fine_temperature_is_refused(value, tiny):
    with pytest.raises(BarkOnnxError, match="temperature"):
        tiny.coarse_to_fine(np.zeros((2, 4), np.int64), temperature=value)


@pytest.mark.parametrize("options", [dict(temperature=float("inf"), top_k=1), dict(temperature=float("nan")),
                                     dict(max_gen_duration_s=float("nan")), dict(max_gen_duration_s="1"),
                                     dict(seed=-1), dict(seed=1.5), dict(min_eos_p=float("nan"))])
def test_bad_semantic_options_are_refused(options, tiny):
    with pytest.raises(BarkOnnxError):
        tiny.text_to_semantic("hello", silent=True, **{"max_gen_duration_s": 0.05, **options})


@pytest.mark.parametrize("temperature", [np.float32(0.7), np.float64(0.7), np.int64(1)])
def test_numpy_scalars_are_welcome(temperature, tiny):
    assert tiny.text_to_semantic("hello", temperature=temperature, seed=0, **SHORT).ndim == 1
