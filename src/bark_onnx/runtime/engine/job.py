"""`Job`: the caller's handle on a submitted request.

Iterate it for streamed chunks (also with `async for`), `result()` for the
request's return value, `cancel()` to stop it. A consumer that stops
iterating early cancels the request. The engine's side is two calls, `push`
(a chunk) and `finish` (the end); everything else about a running request is
the scheduler's (scheduler.py), never the handle's.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any, Callable


class Job:
    """A submitted request: streamed chunks, a final result, cancellation."""

    def __init__(self, on_cancel: Callable[[Job], None]):
        self._on_cancel = on_cancel
        self._cond = threading.Condition()
        self._chunks: deque = deque()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None
        self.cancelled = False  # asked for; the engine ends the request at its next step
        self.submitted = time.perf_counter()
        self.first_chunk_s: float | None = None  # seconds from submission to the first streamed chunk

    @property
    def done(self) -> bool:
        return self._done

    def cancel(self) -> None:
        """Stop the request: at once while it waits in the queue, else its rows are freed at the
        next step. A no-op once it is done."""
        if not self._done:
            self.cancelled = True
            self._on_cancel(self)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the request to end; its return value, or the error it ended with."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._done, timeout):
                raise TimeoutError(f"the request did not finish within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._value

    def __iter__(self):
        """Streamed chunks as they come; raises the request's error at the end, if any."""
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._chunks or self._done)
                    chunk = self._chunks.popleft() if self._chunks else None
                if chunk is None:
                    break
                yield chunk
        finally:
            self.cancel()  # the consumer stopped early (a no-op when done)
        if self._error is not None:
            raise self._error

    async def __aiter__(self):
        """`async for chunk in job`: the same, without blocking the event loop."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                with self._cond:
                    if self._chunks:
                        chunk = self._chunks.popleft()
                    elif self._done:
                        break
                    else:
                        event = asyncio.Event()
                        self._waiters.append((loop, event))
                        chunk = None
                if chunk is None:
                    await event.wait()
                    continue
                yield chunk
        finally:
            self.cancel()
        if self._error is not None:
            raise self._error

    async def aresult(self) -> Any:
        """`await job.aresult()`: result() without blocking the event loop (chunks stay unread)."""
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                if self._done:
                    break
                event = asyncio.Event()
                self._waiters.append((loop, event))
            await event.wait()
        return self.result()

    # ------------------------------------------------------------ the engine's side

    def push(self, chunk) -> None:
        """A streamed chunk for the caller."""
        if self.first_chunk_s is None:
            self.first_chunk_s = time.perf_counter() - self.submitted
        with self._cond:
            self._chunks.append(chunk)
        self._notify()

    def finish(self, value: Any = None, error: BaseException | None = None) -> None:
        """The request's end: its return value or its error."""
        with self._cond:
            self._value, self._error, self._done = value, error, True
        self._notify()

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the consumer's event loop is closed
                pass
