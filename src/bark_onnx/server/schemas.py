"""The speech request: OpenAI's fields plus Bark's options, and what the server makes of them.

Types are checked by pydantic (strictly: `"0.7"` is not a number, `true` not an
integer); values by the runtime's own option checks, so the server accepts
exactly what `Bark.submit` accepts, and every refusal names its field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from ..errors import InputError
from ..longform import MAX_WORDS, split_text
from ..options import PIPELINE_KEYWORDS, GenerationOptions, resolve
from ..text import check_text
from .errors import ApiError
from .settings import ServerSettings

FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
STREAMED_FORMATS = ("pcm", "wav")  # sent chunk by chunk as the audio is made; the others once it is complete
BARK_OPTIONS = tuple(PIPELINE_KEYWORDS)


class VoiceRef(BaseModel):
    """OpenAI's voice object form, `{"id": "..."}`."""

    model_config = ConfigDict(strict=True, extra="forbid")
    id: str


class SpeechRequest(BaseModel):
    """POST /v1/audio/speech. `instructions` is accepted and ignored (Bark takes cues in the text)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    model: str = Field(description="the served model's name, or one of its aliases (GET /v1/models)")
    input: str = Field(description="the text to say; cues like [laughs] work as in Bark")
    voice: Optional[Union[str, VoiceRef]] = Field(None, description="a preset name from GET /v1/audio/voices")
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, description="only 1.0: Bark speaks at its own pace")
    stream_format: Literal["audio", "sse"] = "audio"
    instructions: Optional[str] = Field(None, description="accepted and ignored")
    # Bark's own options (see GenerationOptions); 0 is greedy decoding
    seed: Optional[int] = Field(None, ge=0, le=2 ** 63 - 1)
    text_temperature: Optional[float] = None
    waveform_temperature: Optional[float] = None
    fine_temperature: Optional[float] = None
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    min_eos_p: Optional[float] = None
    max_gen_duration_s: Optional[float] = None
    allow_early_stop: Optional[bool] = None
    max_coarse_history: Optional[int] = None
    sliding_window_len: Optional[int] = None
    # long text (more than one segment): how segments are made and joined
    history: Literal["voice", "previous"] = "voice"
    pause_s: float = Field(0.25, ge=0, le=10)
    max_words: int = Field(MAX_WORDS, ge=1, le=100)


@dataclass(frozen=True)
class Plan:
    """A checked request: what to submit and how to answer."""

    text: str
    voice: str | None
    options: GenerationOptions
    long: bool
    format: str
    sse: bool
    seed: int | None
    history: str
    pause_s: float
    max_words: int

    @property
    def streamed(self) -> bool:
        return self.format in STREAMED_FORMATS


def _bad(message: str, param: str | None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _options(body: SpeechRequest) -> GenerationOptions:
    given = {name: getattr(body, name) for name in BARK_OPTIONS if getattr(body, name) is not None}
    for name, value in given.items():  # one at a time first, so the refusal names its field
        try:
            resolve(None, {name: value}, PIPELINE_KEYWORDS)
        except InputError as err:
            message = str(err)
            raise _bad(message if message.startswith(name) else f"{name}: {message}", name) from None
    try:
        return resolve(None, given, PIPELINE_KEYWORDS)
    except InputError as err:  # a combination the options refuse
        raise _bad(str(err), None) from None


def plan_request(body: SpeechRequest, settings: ServerSettings, voices: frozenset[str]) -> Plan:
    """Check everything the request asks for against this server; raises ApiError(400) naming the field."""
    if body.model not in settings.model_names:
        raise ApiError(400, f"model {body.model!r} is not served here; use one of "
                            f"{', '.join(settings.model_names)}", param="model", code="model_not_found")
    text = body.input
    try:
        check_text(text)  # the runtime's own check: something to say, valid Unicode
    except InputError as err:
        raise _bad(str(err), "input") from None
    try:
        (body.instructions or "").encode("utf-8")
    except UnicodeEncodeError:  # JSON can carry lone surrogates ("\ud800")
        raise _bad("instructions hold characters that are not valid Unicode (lone surrogates)",
                   "instructions") from None
    if len(text) > settings.max_input_chars:
        raise _bad(f"input is {len(text)} characters; this server takes at most {settings.max_input_chars}",
                   "input", "string_above_max_length")
    voice = body.voice.id if isinstance(body.voice, VoiceRef) else body.voice
    if voice is not None and voice not in voices:
        # a preset name only: a client must never make the server open a file of its choosing
        raise _bad(f"unknown voice {voice!r}; GET /v1/audio/voices lists the presets this server has", "voice",
                   "voice_not_found")
    if body.response_format == "aac":
        raise _bad("response_format aac is not available here; use mp3, opus, flac, wav or pcm",
                   "response_format", "unsupported_value")
    if not 0.25 <= body.speed <= 4.0:
        raise _bad(f"speed must lie in [0.25, 4.0], got {body.speed:g}", "speed")
    if body.speed != 1.0:
        raise _bad("speed other than 1.0 is not supported: Bark speaks at its own pace; send 1.0 or leave it out",
                   "speed", "unsupported_value")
    if body.instructions is not None and len(body.instructions) > settings.max_input_chars:
        raise _bad(f"instructions are longer than {settings.max_input_chars} characters", "instructions")
    options = _options(body)
    try:
        long = len(split_text(text, body.max_words)) > 1
    except InputError as err:
        raise _bad(str(err), "input") from None
    return Plan(text, voice, options, long, body.response_format, body.stream_format == "sse", body.seed,
                body.history, body.pause_s, body.max_words)
