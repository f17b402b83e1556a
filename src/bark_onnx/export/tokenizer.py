"""Bark's text tokenizer as a `tokenizers` JSON file.

Bark tokenizes with `bert-base-multilingual-cased` (BertTokenizer, cased, no
special tokens). The same WordPiece pipeline in the `tokenizers` library:
BERT normalizer (clean text, spaces around CJK characters, no lowercasing,
no accent stripping), BERT pre-tokenizer (whitespace and punctuation) and
WordPiece with `##` continuations and `[UNK]`.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from bark_onnx.runtime.errors import CheckpointError


def tokenizer_from_vocab(vocab_path: Path) -> Tokenizer:
    try:
        lines = vocab_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{vocab_path}: cannot read the WordPiece vocabulary ({err})") from None
    vocab: dict[str, int] = {}
    for i, token in enumerate(lines):
        vocab.setdefault(token.rstrip("\n"), i)
    if "[UNK]" not in vocab:
        raise CheckpointError(f"{vocab_path}: not a BERT vocabulary (no [UNK] token)")
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def write_tokenizer(source: Path, out_path: Path) -> int:
    """Write `tokenizer.json` from a vocab.txt or a tokenizer.json; returns the vocabulary size."""
    if source.name.endswith(".json"):
        try:
            tok = Tokenizer.from_file(str(source))
        except Exception as err:
            raise CheckpointError(f"{source}: cannot read it as a tokenizers JSON file ({err})") from None
        tok.post_processor = None  # Bark adds no [CLS]/[SEP]
    else:
        tok = tokenizer_from_vocab(source)
    tok.save(str(out_path))
    return tok.get_vocab_size()
