"""Long text: split at sentence and clause boundaries into segments Bark can say in one go.

Bark's semantic stage makes at most 768 tokens (~15 s of audio) per call and
reads at most 256 text tokens, so long text is cut into segments of at most
`max_words` words (about 13 s of speech at a normal pace): whole sentences
where they fit, a long sentence at its clauses (, ; : dashes), a long clause
at word boundaries (CJK text, which has no spaces, between characters).
"""

from __future__ import annotations

import re

from .text import normalize_text

MAX_WORDS = 30
_SENTENCE = re.compile(r"(?<=[.!?…。！？])\s+|(?<=[。！？])")
_CLAUSE = re.compile(r"(?<=[,;:，；：])\s+|\s+(?=[—–-]\s)")


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def _words(text: str) -> float:
    """Speech length in words: CJK characters (no spaces between words) count half a word each."""
    cjk = len(_CJK.findall(text))
    return len(_CJK.sub(" ", text).split()) + cjk / 2


def _cut(clause: str, max_words: int) -> list[str]:
    """No boundary left: cut between words, or between characters in CJK text."""
    words = clause.split()
    if len(words) > 1 and all(_words(w) <= max_words for w in words):
        return _pack(words, max_words)
    step = 2 * max_words
    return [clause[i: i + step] for i in range(0, len(clause), step)]


def _pack(pieces: list[str], max_words: int, joiner: str = " ") -> list[str]:
    """Greedily join consecutive pieces while the result stays within max_words."""
    out: list[str] = []
    for piece in pieces:
        if out and _words(out[-1]) + _words(piece) <= max_words:
            out[-1] = out[-1] + joiner + piece
        else:
            out.append(piece)
    return out


def _split_long(sentence: str, max_words: int) -> list[str]:
    if _words(sentence) <= max_words:
        return [sentence]
    clauses = [c for c in _CLAUSE.split(sentence) if c.strip()]
    pieces: list[str] = []
    for clause in clauses:
        if _words(clause) <= max_words:
            pieces.append(clause)
        else:
            pieces += _cut(clause, max_words)
    return _pack(pieces, max_words)


def split_text(text: str, max_words: int = MAX_WORDS) -> list[str]:
    """Segments of at most `max_words` (>= 1) words, cut at the best boundary available, of a text
    with something to say (see Request: the text and max_words are checked there)."""
    clean = normalize_text(text)
    sentences = [s.strip() for s in _SENTENCE.split(clean) if s.strip()]
    pieces = [p for s in sentences for p in _split_long(s, max_words)]
    return _pack(pieces, max_words)
