"""Exceptions that carry a sentence the user can act on.

Every error the library raises on purpose derives from `BarkOnnxError`, so a
service can catch one type; the CLI prints the message and exits with 2.
"""


class BarkOnnxError(Exception):
    """Base class of the errors bark-onnx raises on purpose."""


class ModelDirError(BarkOnnxError):
    """A model directory is missing, incomplete, corrupt or of another format."""


class CheckpointError(BarkOnnxError):
    """A source checkpoint cannot be read or does not match Bark's layout."""


class VoiceError(BarkOnnxError, ValueError):
    """A voice preset is unknown, or a voice file is malformed or unsafe."""


class InputError(BarkOnnxError, ValueError):
    """An argument of a generation call is out of range or of the wrong kind."""


class OutputError(BarkOnnxError, OSError):
    """An output file cannot be written where asked (missing or read-only folder, a directory, a full disk)."""
