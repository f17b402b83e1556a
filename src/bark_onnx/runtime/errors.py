"""Exceptions that carry a sentence the user can act on.

Every error the library raises on purpose derives from `BarkOnnxError`, so a
service can catch one type; the CLI prints the message and exits with 2.
"""

from __future__ import annotations


class BarkOnnxError(Exception):
    """Base class of the errors bark-onnx raises on purpose."""


class ModelDirError(BarkOnnxError):
    """A model directory is missing, incomplete, corrupt or of another format."""


class CheckpointError(BarkOnnxError):
    """A source checkpoint cannot be read or does not match Bark's layout."""


class VoiceError(BarkOnnxError, ValueError):
    """A voice preset is unknown, or a voice file is malformed or unsafe."""


class InputError(BarkOnnxError, ValueError):
    """An argument of a generation call is out of range or of the wrong kind; `param` names it
    (a keyword of `Request.make`, or None where no single one is to blame)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class OutputError(BarkOnnxError, OSError):
    """An output file cannot be written where asked (missing or read-only folder, a directory, a full disk)."""


class QueueFullError(BarkOnnxError):
    """Too many requests are waiting: retry later (a server answers 429 with Retry-After)."""


class CancelledError(BarkOnnxError):
    """The request was cancelled before it finished."""


class EngineClosedError(BarkOnnxError):
    """The model was closed; load it again to generate."""
