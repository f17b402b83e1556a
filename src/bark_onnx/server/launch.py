"""What every way of serving shares: a listening socket, and the model the settings describe, loaded."""

from __future__ import annotations

import socket

from ..runtime.errors import BarkOnnxError
from .settings import ServerSettings


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (0: a free port), or a BarkOnnxError saying what to change."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as err:
        raise BarkOnnxError(f"cannot listen on {host}:{port} ({err.strerror or err}); "
                            "pick another --port or --host") from None


def load_model(settings: ServerSettings, model):
    """The model the settings describe, loaded (a server's, or one Ray replica's)."""
    from ..runtime.bark import Bark

    return Bark.load(model, providers=settings.providers, threads=settings.session_threads,
                     max_batch=settings.max_batch, max_queue=settings.max_queue, offline=settings.offline)
