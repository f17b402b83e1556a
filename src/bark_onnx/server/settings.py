"""What a server is told at start: its model's name, limits, key and instance name."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from ..errors import InputError

# Model names a client may send besides the served name: OpenAI's speech models and "bark",
# so that an existing app works by changing only its base URL.
MODEL_ALIASES = ("bark", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")
INSTANCE_HEADER = "X-Bark-Onnx-Instance"


@dataclass(frozen=True)
class ServerSettings:
    """model_name: what /v1/models lists and `model` may name (or one of `aliases`).
    api_key: when set, /v1 routes need `Authorization: Bearer <api_key>`.
    max_input_chars: the longest `input` accepted (OpenAI's limit by default).
    request_timeout_s: a request still generating after this is cancelled (504, or its stream is cut).
    retry_after_s: what a 429 (queue full) or 503 (shutting down) tells the client to wait.
    instance: this server's name, sent in every response's X-Bark-Onnx-Instance header.
    """

    model_name: str = "bark"
    aliases: tuple[str, ...] = MODEL_ALIASES
    api_key: str | None = None
    max_input_chars: int = 4096
    request_timeout_s: float = 600.0
    retry_after_s: int = 1
    instance: str = field(default_factory=socket.gethostname)

    def __post_init__(self):
        if not isinstance(self.model_name, str) or not self.model_name:
            raise InputError("model_name must be a non-empty string")
        if isinstance(self.max_input_chars, bool) or not isinstance(self.max_input_chars, int) \
                or self.max_input_chars < 1:
            raise InputError(f"max_input_chars must be a positive integer, got {self.max_input_chars!r}")
        if isinstance(self.request_timeout_s, bool) or not isinstance(self.request_timeout_s, (int, float)) \
                or not self.request_timeout_s > 0:
            raise InputError(f"request_timeout_s must be a positive number of seconds, got {self.request_timeout_s!r}")
        if isinstance(self.retry_after_s, bool) or not isinstance(self.retry_after_s, int) or self.retry_after_s < 0:
            raise InputError(f"retry_after_s must be a non-negative integer, got {self.retry_after_s!r}")
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key):
            raise InputError("api_key must be a non-empty string (or None for no key)")

    @property
    def model_names(self) -> tuple[str, ...]:
        """Every name `model` may take: the served name first, then the aliases."""
        return (self.model_name, *[a for a in self.aliases if a != self.model_name])

    @property
    def max_body_bytes(self) -> int:
        """The largest request body read: the input at JSON's worst escaping (12 bytes a character), plus room."""
        return 12 * self.max_input_chars + 64 * 1024
