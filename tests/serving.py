"""Helpers of the server tests: an app served in a thread, and a model stand-in with scripted jobs."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import numpy as np


class LiveServer:
    """An app served by uvicorn in a thread on 127.0.0.1 and a free port; `stop()` ends it."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, lifespan="off", log_level="warning", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        until(lambda: self.server.started, 60, "the server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)

    def __enter__(self) -> LiveServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def until(condition, timeout: float, what: str, every: float = 0.02):
    """Wait for `condition()` to hold (a bound against hanging, not a speed requirement)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(every)


def pcm16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1, 1) * 32767.0).round().astype("<i2")


class ScriptedJob:
    """A job that plays a script: "chunk" yields audio, "stall" waits until cancelled, "boom" fails."""

    def __init__(self, *steps: str):
        self.steps, self.cancelled = steps, False

    def cancel(self) -> None:
        self.cancelled = True

    async def __aiter__(self):
        for step in self.steps:
            if step == "chunk":
                yield np.full(2400, 0.25, np.float32)
            elif step == "stall":
                while True:
                    await asyncio.sleep(3600)
            elif step == "boom":
                raise RuntimeError("a scripted failure inside one request")


class GatedJob:
    """A real job that, after its first chunk, waits for `gate` (set by the client once it has the first
    bytes) before going on: the stream can only end if its first bytes reached the client first."""

    def __init__(self, job, gate: threading.Event):
        self.job, self.gate, self.opened = job, gate, None

    def cancel(self) -> None:
        self.job.cancel()

    async def __aiter__(self):
        first = True
        async for chunk in self.job:
            yield chunk
            if first:
                first = False
                self.opened = await asyncio.to_thread(self.gate.wait, 120)


SCRIPTS = {
    "stall": ("stall",),
    "stall-after-one": ("chunk", "stall"),
    "boom": ("boom",),
    "boom-after-one": ("chunk", "boom"),
}


class ScriptedBark:
    """A loaded `Bark` as the server sees it, except that an input naming a script ("stall", "boom", ...)
    gets that scripted job and an input starting with "gated" gets a GatedJob; records every submit."""

    def __init__(self, tts):
        self.tts = tts
        self.calls: list = []  # the Requests submitted
        self.jobs: list = []
        self.gate = threading.Event()

    def __getattr__(self, name):
        return getattr(self.tts, name)

    def submit(self, request):
        self.calls.append(request)
        if request.text in SCRIPTS:
            job = ScriptedJob(*SCRIPTS[request.text])
        elif request.text.startswith("gated"):
            job = GatedJob(self.tts.submit(request), self.gate)
        else:
            job = self.tts.submit(request)
        self.jobs.append(job)
        return job
