"""An OpenAI-compatible speech server on the engine (`bark-onnx serve`; needs the serve extra).

    from bark_onnx import Bark
    from bark_onnx.server import ServerSettings, create_app
    app = create_app(Bark.load("bark-small-onnx"), ServerSettings(served_model_name="bark-small"))

`create_app` builds the FastAPI app around a loaded model and never starts or
closes it: whoever owns the model (the `serve` command, or a replica of a
deployment that mounts the same app) loads it first and closes it after.
Importing this package needs no FastAPI; `create_app` does. (tests/test_server.py runs the
example above as written.)
"""

from __future__ import annotations

from .settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
