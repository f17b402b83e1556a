"""Text: the exported tokenizer equals Bark's BertTokenizer; whitespace, cut and pad rules."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from bark_onnx.constants import TEXT_ENCODING_OFFSET, TEXT_PAD_TOKEN
from bark_onnx.errors import InputError
from bark_onnx.text import TextEncoder

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
    assert "text too long" in caplog.text and "cutting the last" in caplog.text


@pytest.mark.parametrize("bad", ["", "   ", "\n\t", None, 42])
def test_empty_or_non_text_is_refused(bad, encoder):
    with pytest.raises(InputError):
        encoder.token_ids(bad)
