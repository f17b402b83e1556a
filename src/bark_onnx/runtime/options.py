"""Generation options: one frozen, validated object per stage, and the whole set.

    from bark_onnx import GenerationOptions, SemanticOptions
    opts = GenerationOptions(semantic=SemanticOptions(temperature=0.6, top_k=50))
    tts.generate("Hello", options=opts, seed=0)
    tts.generate("Hello", text_temperature=0.6, top_k=50, seed=0)   # the same, as keywords

Every value is checked once, when the object is made: a bad one raises
`InputError` naming the option and what it accepts. Keywords given to an entry
point override the fields of `options` (see `resolve`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from .constants import CONTEXT_WINDOW_SIZE, MAX_TEXT_TOKENS, SEMANTIC_TO_COARSE_RATIO
from .errors import InputError


def _real(name: str, value: Any, low: float, low_open: bool = False, high: float | None = None,
          optional: bool = False) -> float | None:
    """A finite real number (numpy scalars welcome) in range, as a Python float."""
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a number, got {type(value).__name__} {value!r}", name)
    number = float(value)
    if not math.isfinite(number):
        raise InputError(f"{name} must be a finite number, got {number}", name)
    below = number <= low if low_open else number < low
    if below or (high is not None and number > high):
        bounds = f"{'(' if low_open else '['}{low:g}, {'inf)' if high is None else f'{high:g}]'}"
        raise InputError(f"{name} must lie in {bounds}, got {number:g}", name)
    return number


def _int(name: str, value: Any, low: int, high: int | None = None, optional: bool = False) -> int | None:
    """An integer (numpy integers welcome, bools and floats refused) in range."""
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer, got {type(value).__name__} {value!r}", name)
    number = int(value)
    if number < low or (high is not None and number > high):
        raise InputError(f"{name} must lie in [{low}, {'inf' if high is None else high}], got {number}", name)
    return number


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be True or False, got {type(value).__name__} {value!r}", name)
    return bool(value)


def check_temperature(name: str, value: Any) -> float | None:
    """0 or None: greedy (argmax); otherwise a finite positive number."""
    return _real(name, value, 0.0, optional=True)


def check_seed(seed: Any) -> int | np.random.Generator | None:
    """None, a non-negative integer, or a numpy Generator (used as it is)."""
    if seed is None or isinstance(seed, np.random.Generator):
        return seed
    return _int("seed", seed, 0)


@dataclass(frozen=True)
class SemanticOptions:
    """Text -> semantic tokens. Defaults are Bark's."""

    temperature: float | None = 0.7
    top_k: int | None = None  # keep the k most likely tokens
    top_p: float | None = None  # keep the most likely tokens up to this probability
    min_eos_p: float | None = 0.2  # stop once P(end of speech) reaches this
    max_gen_duration_s: float | None = None  # stop after this much audio
    allow_early_stop: bool = True

    def __post_init__(self):
        _set(self, "temperature", check_temperature("temperature", self.temperature))
        _check_filters(self)
        _set(self, "min_eos_p", _real("min_eos_p", self.min_eos_p, 0.0, high=1.0, optional=True))
        _set(self, "max_gen_duration_s",
             _real("max_gen_duration_s", self.max_gen_duration_s, 0.0, low_open=True, optional=True))
        _set(self, "allow_early_stop", _flag("allow_early_stop", self.allow_early_stop))


@dataclass(frozen=True)
class CoarseOptions:
    """Semantic tokens -> the 2 coarse codebooks. Defaults are Bark's."""

    temperature: float | None = 0.7
    top_k: int | None = None
    top_p: float | None = None
    max_coarse_history: int = 630  # coarse tokens of context per window
    sliding_window_len: int = 60  # tokens per window

    def __post_init__(self):
        _set(self, "temperature", check_temperature("temperature", self.temperature))
        _check_filters(self)
        _set(self, "max_coarse_history", _int("max_coarse_history", self.max_coarse_history, 60, 630))
        room = CONTEXT_WINDOW_SIZE - MAX_TEXT_TOKENS - self.max_coarse_history
        _set(self, "sliding_window_len", _int("sliding_window_len", self.sliding_window_len, 1, room))

    @property
    def max_semantic_history(self) -> int:
        return int(np.floor(self.max_coarse_history / SEMANTIC_TO_COARSE_RATIO))


@dataclass(frozen=True)
class FineOptions:
    """Coarse codes -> all 8 codebooks."""

    temperature: float | None = 0.5

    def __post_init__(self):
        _set(self, "temperature", check_temperature("temperature", self.temperature))


@dataclass(frozen=True)
class GenerationOptions:
    """The options of every stage, passed whole to any entry point."""

    semantic: SemanticOptions = field(default_factory=SemanticOptions)
    coarse: CoarseOptions = field(default_factory=CoarseOptions)
    fine: FineOptions = field(default_factory=FineOptions)

    def __post_init__(self):
        for name, kind in (("semantic", SemanticOptions), ("coarse", CoarseOptions), ("fine", FineOptions)):
            if not isinstance(getattr(self, name), kind):
                raise InputError(f"GenerationOptions.{name} must be a {kind.__name__}, "
                                 f"got {type(getattr(self, name)).__name__}")


def _set(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)  # frozen: store the normalised value once


def _check_filters(obj) -> None:
    _set(obj, "top_k", _int("top_k", obj.top_k, 1, optional=True))
    _set(obj, "top_p", _real("top_p", obj.top_p, 0.0, low_open=True, high=1.0, optional=True))


# Keyword shorthand: name -> the (stage, field) pairs it sets. `temperature` on a
# stage method means that stage's temperature; top_k / top_p on a whole-pipeline
# call filter both GPT stages that sample tokens (semantic and coarse).
KEYWORDS = {
    "text_temperature": (("semantic", "temperature"),),
    "waveform_temperature": (("coarse", "temperature"),),
    "fine_temperature": (("fine", "temperature"),),
    "top_k": (("semantic", "top_k"), ("coarse", "top_k")),
    "top_p": (("semantic", "top_p"), ("coarse", "top_p")),
    "min_eos_p": (("semantic", "min_eos_p"),),
    "max_gen_duration_s": (("semantic", "max_gen_duration_s"),),
    "allow_early_stop": (("semantic", "allow_early_stop"),),
    "max_coarse_history": (("coarse", "max_coarse_history"),),
    "sliding_window_len": (("coarse", "sliding_window_len"),),
}
STAGE_TYPES = {"semantic": SemanticOptions, "coarse": CoarseOptions, "fine": FineOptions}


def stage_keywords(stage: str) -> dict[str, tuple[tuple[str, str], ...]]:
    """The keywords a stage method takes: its own fields by name."""
    return {f.name: ((stage, f.name),) for f in fields(STAGE_TYPES[stage])}


def resolve(options: Any, keywords: dict[str, Any], allowed: dict[str, tuple]) -> GenerationOptions:
    """`options` (None, a GenerationOptions or one stage's options) with `keywords` applied on top.

    A refused value raises InputError whose `param` names the keyword (None when only the
    combination of several is refused, e.g. a sliding window too long for the coarse history)."""
    if options is None:
        base = GenerationOptions()
    elif isinstance(options, GenerationOptions):
        base = options
    elif isinstance(options, tuple(STAGE_TYPES.values())):
        stage = next(s for s, kind in STAGE_TYPES.items() if isinstance(options, kind))
        base = replace(GenerationOptions(), **{stage: options})
    else:
        raise InputError("options must be a GenerationOptions, SemanticOptions, CoarseOptions or FineOptions, "
                         f"got {type(options).__name__}", "options")
    unknown = sorted(set(keywords) - set(allowed))
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(unknown)}; this call takes {', '.join(sorted(allowed))}",
                         unknown[0])
    try:
        return _apply(base, keywords, allowed)
    except InputError as whole:
        for name, value in keywords.items():  # the keyword refused on its own, if one is
            try:
                _apply(base, {name: value}, allowed)
            except InputError as err:
                message = str(err)
                raise InputError(message if message.startswith(name) else f"{name}: {message}", name) from None
        whole.param = None
        raise


def _apply(base: GenerationOptions, keywords: dict[str, Any], allowed: dict[str, tuple]) -> GenerationOptions:
    changes: dict[str, dict[str, Any]] = {}
    for name, value in keywords.items():
        for stage, attr in allowed[name]:
            changes.setdefault(stage, {})[attr] = value
    for stage, values in changes.items():
        base = replace(base, **{stage: replace(getattr(base, stage), **values)})
    return base
