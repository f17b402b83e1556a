"""uvicorn, told to drain: stop accepting, finish what is in flight, return (the process exits 0)."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading

import uvicorn


def uvicorn_config(app, drain_timeout: float) -> uvicorn.Config:
    """uvicorn's settings for the app: its logs at the root logger's level, access lines only when verbose;
    after a stop signal, requests in flight get `drain_timeout` seconds before they are cancelled."""
    verbose = logging.getLogger().isEnabledFor(logging.INFO)
    return uvicorn.Config(app, lifespan="off", timeout_graceful_shutdown=drain_timeout,
                          log_level="info" if verbose else "warning", access_log=verbose)


class DrainingServer(uvicorn.Server):
    """uvicorn's server that marks the app draining (new speech requests get 503, /ready too) when told
    to stop, prints `banner` once it listens, and after a clean drain returns instead of re-raising the
    signal as uvicorn does (which would end the process with the signal's status, not 0)."""

    def __init__(self, config: uvicorn.Config, state, banner: str):
        super().__init__(config)
        self.state, self.banner = state, banner

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        print(self.banner, file=sys.stderr, flush=True)

    def handle_exit(self, sig, frame) -> None:
        self.state.draining = True
        if not self.should_exit:
            print(f"bark-onnx: signal {sig}: draining the requests in flight", file=sys.stderr, flush=True)
        super().handle_exit(sig, frame)  # a second signal forces the exit

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)
