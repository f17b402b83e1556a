"""Text to Bark's text tokens: collapse whitespace, WordPiece, offset, cut, pad.

Bark tokenizes the whole text and keeps the first 256 tokens. Tokenizing
megabytes only to drop them is slow and takes gigabytes, so this module
tokenizes a growing prefix until it has more than 256 tokens whose words lie
wholly inside it; the result is the same as tokenizing everything.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ..constants import MAX_TEXT_TOKENS, TEXT_ENCODING_OFFSET, TEXT_PAD_TOKEN
from ..errors import InputError, ModelDirError

logger = logging.getLogger(__name__)

FIRST_PREFIX = 4096  # characters tried first: 256 tokens of ordinary text take 1 to 2 kB
_SURROGATE = re.compile("[\ud800-\udfff]")
_NON_SPACE = re.compile(r"\S")
# A run of letters and digits below U+0800 (scripts whose characters every Unicode version
# the tokenizer may use knows); WordPiece turns a word longer than its limit into one
# [UNK], however long, so such a run can be shortened to limit + 1 letters unchanged.
_LETTER_RUN = r"[^\W_\u0800-\U0010ffff]{%d,}"


def normalize_text(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def check_text(text) -> None:
    """A text Bark can take: a string with something to say, valid Unicode; else InputError."""
    if not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}")
    if _NON_SPACE.search(text) is None:
        raise InputError("text is empty; give Bark something to say")
    bad = _SURROGATE.search(text)
    if bad is not None:
        raise InputError(
            f"text holds a lone surrogate (U+{ord(bad.group()):04X}) at character {bad.start()}, which is not "
            "valid Unicode; decode the text with errors='replace' or remove that character")


class TextEncoder:
    """Bark's tokenizer (bert-base-multilingual-cased, no special tokens) from tokenizer.json."""

    def __init__(self, path: Path):
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:
            raise ModelDirError(f"cannot load the tokenizer {path} ({err}); export the model again") from None
        limit = getattr(self.tokenizer.model, "max_input_chars_per_word", 100)
        self._long_run = re.compile(_LETTER_RUN % (limit + 1))
        self._unk_word = "x" * (limit + 1)

    def _encode(self, text: str):
        short = self._long_run.sub(self._unk_word, normalize_text(text))
        try:
            return self.tokenizer.encode(short, add_special_tokens=False)
        except Exception as err:  # the tokenizer's own error types
            raise InputError(f"the tokenizer cannot read this text ({type(err).__name__}: {err})") from None

    def _first_tokens(self, text: str) -> tuple[list[int], bool, int]:
        """(tokens, cut, characters) where tokens are the text's first tokens: all of them, or
        more than 256 when cut. A prefix's last word may go on past it, so its tokens are dropped."""
        n = FIRST_PREFIX
        while True:
            whole = n >= len(text)
            enc = self._encode(text if whole else text[:n])
            ids, words = enc.ids, enc.word_ids
            if not whole and ids:
                ids = ids[: words.index(words[-1])]
            if whole or len(ids) > MAX_TEXT_TOKENS:
                return ids, len(ids) > MAX_TEXT_TOKENS, len(text) if whole else n
            n *= 4

    def token_ids(self, text: str) -> np.ndarray:
        """Text tokens with Bark's offset, at most 256 (warns when it cuts, as Bark does), int64 (n,), of a
        text that passed `check_text`."""
        ids, cut, n_chars = self._first_tokens(text)
        if not ids:
            raise InputError(f"text {text[:60]!r} has no tokens Bark can read")
        if cut:
            total = len(ids) * len(text) / n_chars  # exact when the whole text was tokenized
            logger.warning(
                "text too long (about %d tokens): Bark reads the first %d, cutting about the last %.1f%%; "
                "to say all of it pass long=True (bark-onnx say --long)",
                total, MAX_TEXT_TOKENS, max(0.0, (total - MAX_TEXT_TOKENS) / total * 100))
        return np.asarray(ids[:MAX_TEXT_TOKENS], dtype=np.int64) + TEXT_ENCODING_OFFSET

    def encode(self, text: str) -> np.ndarray:
        """The 256 text positions of the semantic prefill: tokens, right-padded with the text pad."""
        ids = self.token_ids(text)
        return np.pad(ids, (0, MAX_TEXT_TOKENS - ids.size), constant_values=TEXT_PAD_TOKEN)
