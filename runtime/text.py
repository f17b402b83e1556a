"""Text to Bark's text tokens: collapse whitespace, WordPiece, offset, cut, pad."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .constants import MAX_TEXT_TOKENS, TEXT_ENCODING_OFFSET, TEXT_PAD_TOKEN
from .errors import InputError, ModelDirError

logger = logging.getLogger(__name__)


def normalize_text(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class TextEncoder:
    """Bark's tokenizer (bert-base-multilingual-cased, no special tokens) from tokenizer.json."""

    def __init__(self, path: Path):
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:
            raise ModelDirError(f"cannot load the tokenizer {path} ({err}); export the model again") from None

    def token_ids(self, text: str) -> np.ndarray:
        """Text tokens with Bark's offset, at most 256 (warns when it cuts), int64 (n,)."""
        if not isinstance(text, str):
            raise InputError(f"text must be a string, got {type(text).__name__}")
        clean = normalize_text(text)
        if not clean:
            raise InputError("text is empty; give Bark something to say")
        ids = np.asarray(self.tokenizer.encode(clean, add_special_tokens=False).ids, dtype=np.int64)
        if ids.size == 0:
            raise InputError(f"text {text!r} has no tokens Bark can read")
        ids = ids + TEXT_ENCODING_OFFSET
        if ids.size > MAX_TEXT_TOKENS:
            cut = round((ids.size - MAX_TEXT_TOKENS) / ids.size * 100, 1)
            logger.warning("text too long (%d tokens): cutting the last %.1f%% to fit Bark's %d",
                           ids.size, cut, MAX_TEXT_TOKENS)
            ids = ids[:MAX_TEXT_TOKENS]
        return ids

    def count(self, text: str) -> int:
        """Tokens in `text` before the cut (for splitting long text)."""
        return len(self.tokenizer.encode(normalize_text(text), add_special_tokens=False).ids)

    def encode(self, text: str) -> np.ndarray:
        """The 256 text positions of the semantic prefill: tokens, right-padded with the text pad."""
        ids = self.token_ids(text)
        return np.pad(ids, (0, MAX_TEXT_TOKENS - ids.size), constant_values=TEXT_PAD_TOKEN)
