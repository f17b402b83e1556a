"""The speech request: OpenAI's fields plus Bark's options, and the `Request` the server makes of it.

Types are checked by pydantic (strictly: `"0.7"` is not a number, `true` not an
integer). The body's Bark fields are made from the runtime's own list of option
keywords (options.KEYWORDS, typed as the option dataclasses type them), and
`plan_request` turns the body into a `Request` with `Request.make`, once: the
server accepts exactly what `Bark.submit` accepts, every refusal names its
field, and nothing is checked again downstream. The server's own rules are
HTTP's: the model name, the input's size, the audio format, preset voices only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Union, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..runtime.errors import BarkOnnxError
from ..runtime.options import KEYWORDS, STAGE_TYPES
from ..runtime.request import Request
from .errors import ApiError, api_error
from .settings import ServerSettings

STREAMED_FORMATS = ("pcm", "wav")  # sent chunk by chunk as the audio is made; the others once it is complete
MAX_WORDS_LIMIT = 100  # the most words per segment a client may ask for


class VoiceRef(BaseModel):
    """OpenAI's voice object form, `{"id": "..."}`."""

    model_config = ConfigDict(strict=True, extra="forbid")
    id: str


class _SpeechFields(BaseModel):
    """POST /v1/audio/speech. `instructions` is accepted and ignored (Bark takes cues in the text)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    model: str = Field(description="the served model's name, or one of its aliases (GET /v1/models)")
    input: str = Field(description="the text to say; cues like [laughs] work as in Bark")
    voice: Optional[Union[str, VoiceRef]] = Field(None, description="a preset name from GET /v1/audio/voices")
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, description="only 1.0: Bark speaks at its own pace")
    stream_format: Literal["audio", "sse"] = "audio"
    instructions: Optional[str] = Field(None, description="accepted and ignored")
    seed: Optional[int] = Field(None, le=2 ** 63 - 1, description="makes the audio reproducible")
    # long text (more than one segment): how segments are made and joined (the runtime's defaults)
    history: Optional[str] = Field(None, description="long text: 'voice' (default) or 'previous'")
    pause_s: Optional[float] = Field(None, description="long text: seconds of silence between segments (0.25)")
    max_words: Optional[int] = Field(None, le=MAX_WORDS_LIMIT, description="long text: words per segment (30)")


def _option_field(name: str) -> tuple:
    """A body field for one of Bark's option keywords, typed as its option dataclass types it."""
    stage, attr = KEYWORDS[name][0]
    kind = get_type_hints(STAGE_TYPES[stage])[attr]
    return Optional[kind], Field(None, description=f"Bark's {stage} {attr} (see GenerationOptions)")


SpeechRequest = create_model("SpeechRequest", __base__=_SpeechFields,
                             **{name: _option_field(name) for name in KEYWORDS})


@dataclass(frozen=True)
class Plan:
    """A checked request: what to submit and how to answer."""

    request: Request
    format: str
    sse: bool

    @property
    def streamed(self) -> bool:
        return self.format in STREAMED_FORMATS


def _bad(message: str, param: str | None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def plan_request(body: SpeechRequest, settings: ServerSettings, voices: frozenset[str]) -> Plan:
    """Check what the request asks of this server and make its Request; raises ApiError(400) naming the field."""
    if body.model not in settings.model_names:
        raise ApiError(400, f"model {body.model!r} is not served here; use one of "
                            f"{', '.join(settings.model_names)}", param="model", code="model_not_found")
    if len(body.input) > settings.max_input_chars:
        raise _bad(f"input is {len(body.input)} characters; this server takes at most {settings.max_input_chars}",
                   "input", "string_above_max_length")
    try:
        (body.instructions or "").encode("utf-8")
    except UnicodeEncodeError:  # JSON can carry lone surrogates ("\ud800")
        raise _bad("instructions hold characters that are not valid Unicode (lone surrogates)",
                   "instructions") from None
    if body.instructions is not None and len(body.instructions) > settings.max_input_chars:
        raise _bad(f"instructions are longer than {settings.max_input_chars} characters", "instructions")
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
    options = {name: getattr(body, name) for name in KEYWORDS if getattr(body, name) is not None}
    try:
        request = Request.make(body.input, voice, seed=body.seed, long="auto", history=body.history,
                               pause_s=body.pause_s, max_words=body.max_words, stream=True, **options)
    except BarkOnnxError as err:
        raise api_error(err, settings) from None
    return Plan(request, body.response_format, body.stream_format == "sse")
