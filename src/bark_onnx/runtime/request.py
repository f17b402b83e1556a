"""`Request`: one text-to-audio request, made and checked once.

    from bark_onnx import Request
    request = Request.make("Hello [laughs]", voice="v2/en_speaker_6", seed=0, text_temperature=0.6)
    job = tts.submit(request)             # the one primitive; generate() and stream() are shorthands

`Request.make` takes flat keywords: the request's own (voice, seed, options, long,
history, pause_s, max_words, stream, silent) and Bark's option names
(`text_temperature`, `top_k`, ..., see options.KEYWORDS). The Python shorthands,
the CLI and the server's request body all build their request through it. Every
value is checked when the request is made, and a bad one raises `InputError`
naming it (`err.param`); a `Request` is frozen, so whoever holds one may trust
it. The voice is a reference (a preset name, an .npz path or a dict of arrays):
the model that runs the request loads it, from its own presets.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import numpy as np

from .errors import InputError
from .options import KEYWORDS, GenerationOptions, check_seed, resolve
from .stages.longform import MAX_WORDS, split_text
from .stages.text import check_text

HISTORIES = ("voice", "previous")
LongChoice = Union[bool, Literal["auto"]]  # what Request.make's `long` takes


@dataclass(frozen=True)
class LongText:
    """How a long text becomes segments, one after another (see stages/longform.py).

    history: "voice" gives every segment the request's voice (a steady timbre); "previous"
    continues each segment from the previous one's generation. pause_s: silence between
    segments. max_words: the most words in a segment (about 13 s of speech at 30). auto: cut
    only when the text makes more than one segment (else the request is an ordinary one).
    """

    history: str = "voice"
    pause_s: float = 0.25
    max_words: int = MAX_WORDS
    auto: bool = False

    def __post_init__(self):
        if self.history not in HISTORIES:
            raise InputError(f"history must be 'voice' or 'previous', got {self.history!r}", param="history")
        pause = self.pause_s
        if isinstance(pause, (bool, np.bool_)) or not isinstance(pause, numbers.Real) or not 0 <= float(pause) <= 10:
            raise InputError(f"pause_s must be a number of seconds in [0, 10], got {pause!r}", param="pause_s")
        words = self.max_words
        if isinstance(words, (bool, np.bool_)) or not isinstance(words, numbers.Integral) or words < 1:
            raise InputError(f"max_words must be an integer >= 1, got {words!r}", param="max_words")
        object.__setattr__(self, "pause_s", float(pause))
        object.__setattr__(self, "max_words", int(words))
        object.__setattr__(self, "auto", bool(self.auto))


@dataclass(frozen=True)
class Request:
    """What to say and how.

    text: what to say (cues like [laughs] work as in Bark). voice: a preset name, an .npz path,
    a dict of the three prompt arrays, or None. seed: None, an integer or a numpy Generator.
    options: every stage's options. long: None for one segment (Bark reads the first 256 text
    tokens), or how to cut a long text into segments. stream: hand out audio chunks as they
    decode (the fine stage then runs chunk by chunk). silent: no progress bars.
    `segments` is made from these: the texts said in turn (one, unless the text is long).
    """

    text: str
    voice: Any = None
    seed: Any = None
    options: GenerationOptions = field(default_factory=GenerationOptions)
    long: LongText | None = None
    stream: bool = False
    silent: bool = True
    segments: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self):
        _checked("text", check_text, self.text)
        object.__setattr__(self, "seed", _checked("seed", check_seed, self.seed))
        if not isinstance(self.options, GenerationOptions):
            raise InputError(f"options must be a GenerationOptions, got {type(self.options).__name__}",
                             param="options")
        if self.long is not None and not isinstance(self.long, LongText):
            raise InputError(f"long must be a LongText or None, got {type(self.long).__name__}", param="long")
        for name in ("stream", "silent"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise InputError(f"{name} must be True or False, got {getattr(self, name)!r}", param=name)
        segments = split_text(self.text, self.long.max_words) if self.long else [self.text]
        if self.long is not None and self.long.auto and len(segments) == 1:
            object.__setattr__(self, "long", None)  # one segment: an ordinary request
            segments = [self.text]
        object.__setattr__(self, "segments", tuple(segments))

    @classmethod
    def make(cls, text: str, voice: Any = None, *, seed: Any = None, options: Any = None, long: LongChoice = False,
             history: str | None = None, pause_s: float | None = None, max_words: int | None = None,
             stream: bool = False, silent: bool = True, **keywords) -> Request:
        """A request from flat keywords; Bark's option names (see `options.KEYWORDS`) override `options`.

        long: False (one segment), True (cut at sentences and clauses into segments) or "auto"
        (cut only when the text makes more than one segment). history, pause_s and max_words
        shape long text (see LongText for their defaults) and need long.
        """
        if not (isinstance(long, bool) or long == "auto"):
            raise InputError(f"long must be True, False or 'auto', got {long!r}", param="long")
        given = {name: value for name, value in (("history", history), ("pause_s", pause_s),
                                                 ("max_words", max_words)) if value is not None}
        if given and long is False:
            raise InputError(f"{', '.join(given)} shape long text: pass long=True (or 'auto') with them",
                             param=next(iter(given)))
        settings = LongText(**given, auto=long == "auto") if long is not False else None
        return cls(text, voice, seed, resolve(options, keywords, KEYWORDS), settings, stream, silent)


def _checked(param: str, check, value):
    """Run a check; its InputError names `param`."""
    try:
        return check(value)
    except InputError as err:
        err.param = err.param or param
        raise
