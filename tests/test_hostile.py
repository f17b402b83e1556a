"""Hostile input, generated: every call succeeds or raises a BarkOnnxError, never anything else.

Random texts (control characters, lone surrogates, CJK, emoji, very long),
random voice dicts, random and damaged bytes as .npz files, random voice
names, random config.json mutations. Examples are few and unhurried
(max_examples small, no deadline) so the file runs in seconds.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bark_onnx import Bark
from bark_onnx.runtime.constants import TEXT_ENCODING_OFFSET
from bark_onnx.runtime.stages.text import TextEncoder, normalize_text
from bark_onnx.runtime.model.voices import VOICE_KEYS

from .conftest import succeeds_or_bark_error

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ODD_CHARACTERS = list("ab Z9 é日本語한😀♪[]().,!?-'\"")  # letters, CJK, emoji, Bark's cues, punctuation
ODD_CHARACTERS += list("\x00\x01\x1c\x7f\n\t\r\u200b\u00a0\u2028\ufffd\ud800\udfff\U0010ffff")  # controls, surrogates
texts = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=300),  # anything, surrogates included
    st.text(st.sampled_from(ODD_CHARACTERS), max_size=3000),
    st.builds(lambda part, n: part * n, st.text(st.sampled_from(ODD_CHARACTERS), min_size=1, max_size=12),
              st.integers(1, 5000)),  # very long, repetitive
)



@pytest.fixture(scope="module")
def tiny(tts) -> Bark:
    return tts["suno-tiny"]


@settings(max_examples=40, **SETTINGS)
@given(text=texts)
def test_texts(text, tiny):
    tokens = succeeds_or_bark_error(tiny.text_to_semantic, text, max_gen_duration_s=0.05, silent=True)
    assert tokens is None or (tokens.ndim == 1 and tokens.dtype == np.int64)


@pytest.fixture(scope="module")
def encoder(model_dirs) -> TextEncoder:
    return TextEncoder(model_dirs["suno-tiny"] / "tokenizer.json")


@settings(max_examples=40, **SETTINGS)
@given(text=texts.filter(lambda t: not any("\ud800" <= c <= "\udfff" for c in t)))
def test_text_is_cut_as_bark_cuts_it(text, encoder, bert_tokenize):
    """Tokenizing only a prefix gives Bark's first 256 tokens of the whole text."""
    expected = bert_tokenize(normalize_text(text))[:256]
    got = succeeds_or_bark_error(encoder.token_ids, text)
    if got is None:
        assert expected == []
    else:
        assert (got - TEXT_ENCODING_OFFSET).tolist() == expected


array_values = st.one_of(
    st.sampled_from([np.int64, np.int16, np.uint8, np.float32, np.bool_]).flatmap(
        lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=12))),
    st.sampled_from([(9,), (2, 9), (8, 9)]).flatmap(  # the right shapes: loadable now and then
        lambda shape: hnp.arrays(np.int64, shape, elements=st.integers(-1, 1024))),
    st.lists(st.integers(-(2 ** 70), 2 ** 70), max_size=5),
    st.lists(st.lists(st.integers(0, 20), max_size=3), max_size=8),  # ragged
    st.sampled_from([None, "abc", 3, 2.5, {}, b"\x00"]),
)
voice_dicts = st.fixed_dictionaries({k: array_values for k in VOICE_KEYS}) | st.fixed_dictionaries(
    {}, optional={k: array_values for k in (*VOICE_KEYS, "extra")})


@settings(max_examples=40, **SETTINGS)
@given(voice=voice_dicts)
def test_voice_dicts(voice, tiny):
    loaded = succeeds_or_bark_error(tiny.load_voice, voice)
    if loaded is not None:
        tokens = succeeds_or_bark_error(tiny.text_to_semantic, "hi", voice=voice, max_gen_duration_s=0.05,
                                         silent=True)
        assert tokens is None or tokens.ndim == 1


def _voice_npz() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(buf, semantic_prompt=rng.integers(0, 10_000, 30), coarse_prompt=rng.integers(0, 1024, (2, 20)),
             fine_prompt=rng.integers(0, 1024, (8, 20)))
    return buf.getvalue()


VALID_NPZ = _voice_npz()


@st.composite
def damaged_npz(draw) -> bytes:
    """A real voice .npz with some bytes changed, or cut short."""
    data = bytearray(VALID_NPZ)
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))]) if draw(st.booleans()) else bytes(data)


@settings(max_examples=60, **SETTINGS)
@given(content=st.binary(max_size=2000) | damaged_npz())
def test_bytes_as_npz(content, tiny):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "voice.npz"
        path.write_bytes(content)
        voice = succeeds_or_bark_error(tiny.load_voice, path)
        assert voice is None or set(voice) == set(VOICE_KEYS)


names = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=40),
    st.lists(st.sampled_from(list("abv2_/-.\\ \x00\ud800") + ["en_speaker_", ".npz", "../"]), max_size=20).map("".join),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "é", "/", "ab/", "日"]), st.integers(200, 5000)),
)


@settings(max_examples=60, **SETTINGS)
@given(name=names)
def test_voice_names(name, tiny):
    succeeds_or_bark_error(tiny.load_voice, name)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
DEEP = "@@deep@@"


def _paths(node, prefix=()):
    yield prefix
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield from _paths(child, (*prefix, key))


@st.composite
def mutated_config(draw, config: dict) -> str:
    """config.json text with one place replaced, removed, or nested thousands of levels deep."""
    config = json.loads(json.dumps(config))
    path = draw(st.sampled_from([p for p in _paths(config) if p]))
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    action = draw(st.sampled_from(["replace", "remove", "deep"]))
    if action == "remove":
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values) if action == "replace" else DEEP
    depth = draw(st.integers(1, 20_000))
    return json.dumps(config).replace(json.dumps(DEEP), "[" * depth + "]" * depth)


@pytest.fixture(scope="module")
def tiny_config(model_dirs) -> dict:
    return json.loads((model_dirs["suno-tiny"] / "config.json").read_text())


@settings(max_examples=40, **SETTINGS)
@given(data=st.data())
def test_config_mutations(data, tiny_config, model_dirs):
    text = data.draw(mutated_config(tiny_config))
    source = model_dirs["suno-tiny"]
    with tempfile.TemporaryDirectory() as folder:
        for f in source.iterdir():
            if f.name != "config.json":
                os.symlink(f, Path(folder) / f.name)
        (Path(folder) / "config.json").write_text(text)
        succeeds_or_bark_error(Bark.load, folder)
