"""Text: the exported tokenizer equals Bark's BertTokenizer; whitespace, cut and pad rules."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from bark_onnx.runtime.constants import TEXT_ENCODING_OFFSET, TEXT_PAD_TOKEN
from bark_onnx.runtime.errors import InputError
from bark_onnx.runtime.request import Request
from bark_onnx.runtime.stages.text import TextEncoder

TEXTS = [
    "Hello world",
    "  Hello\n\t world  ",
    "[laughs] Hello... [clears throat] this is my voice ♪",
    "HELLO WORLD!! how are you today?",
    "héllo wörld, ça va? Straße",
    "日本語 中文 한국어",
    "unknownwordzzz &% 42",
    "a" * 150,
    "I'm \"quoted\" (bracketed) — dash",
    "\u200bzero\u00a0width",
]


@pytest.fixture(scope="module")
def encoder(model_dirs):
    return TextEncoder(model_dirs["suno-tiny"] / "tokenizer.json")


@pytest.mark.parametrize("text", TEXTS)
def test_tokens_equal_bert_tokenizer(text, encoder, bert_tokenize):
    expected = np.array(bert_tokenize(" ".join(text.split())), dtype=np.int64) + TEXT_ENCODING_OFFSET
    np.testing.assert_array_equal(encoder.token_ids(text), expected[:256])


def test_prefill_is_padded_to_256(encoder):
    ids = encoder.encode("hello world")
    assert ids.shape == (256,) and (ids[2:] == TEXT_PAD_TOKEN).all()
    assert (ids[:2] >= TEXT_ENCODING_OFFSET).all()


def test_long_text_warns_and_is_cut(encoder, caplog):
    with caplog.at_level(logging.WARNING):
        ids = encoder.token_ids("hello " * 300)
    assert ids.shape == (256,)
    assert "text too long (about 300 tokens)" in caplog.text and "cutting about the last 14.7%" in caplog.text
    assert "long=True" in caplog.text and "say --long" in caplog.text


LONG_TEXTS = [
    "hello world, " * 2000,
    "日本語のテキスト" * 3000,
    ("x" * 150 + " ") * 300,  # each word longer than WordPiece's 100 characters is one [UNK]
    "a" * 20_000 + " and then words " * 200,
    "é" * 9000 + "." + "b" * 3000 + " c d" * 300,
    "\x01\x02" * 5000 + " ok" * 300,  # control characters the tokenizer drops
    " \n\t" * 6000 + "word " * 400,
    "[laughs] ♪ la la ♪ " * 500 + "😀" * 5000,
]


@pytest.mark.parametrize("text", LONG_TEXTS)
def test_long_text_is_cut_as_bark_cuts_it(text, encoder, bert_tokenize):
    expected = np.array(bert_tokenize(" ".join(text.split()))[:256], dtype=np.int64) + TEXT_ENCODING_OFFSET
    np.testing.assert_array_equal(encoder.token_ids(text), expected)


def test_megabytes_of_text_are_not_all_tokenized(encoder, monkeypatch):
    seen = []
    real = encoder.tokenizer

    class Counting:
        model = real.model

        def encode(self, text, add_special_tokens=False):
            seen.append(len(text))
            return real.encode(text, add_special_tokens=add_special_tokens)

    monkeypatch.setattr(encoder, "tokenizer", Counting())
    for text in ("hello world " * 900_000, "a" * 10_000_000 + " hi"):
        seen.clear()
        assert encoder.token_ids(text).size > 0
        assert sum(seen) < 50_000, f"tokenized {sum(seen)} characters of {len(text)}"


@pytest.mark.parametrize("text", ["hello \ud800 world", "\udfff", "ok " * 5000 + "\udc80"])
def test_lone_surrogates_are_refused_with_a_reason(text):
    with pytest.raises(InputError, match="lone surrogate") as refused:
        Request.make(text)
    assert refused.value.param == "text"


@pytest.mark.parametrize("text", ["\x00\x01\x02", "\ufffd\u200b", "\x7f"])
def test_text_without_readable_tokens_is_refused(text, encoder):
    with pytest.raises(InputError):
        encoder.token_ids(text)


@pytest.mark.parametrize("bad", ["", "   ", "\n\t", None, 42])
def test_empty_or_non_text_is_refused(bad):
    with pytest.raises(InputError) as refused:
        Request.make(bad)
    assert refused.value.param == "text"
