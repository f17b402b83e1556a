"""The engine: many requests on one model, advanced together (continuous batching).

Every request is a pipeline generator (see work.py) that asks for one piece of
graph work at a time. One scheduler thread owns the sessions and loops:

    admit waiting requests (at most max_batch in flight)
    run each request's own code until it asks for graph work (or ends)
    run the asked-for work, batched across requests (executor.py), send results back

A request joins when it is admitted and leaves at its own end; the others
never wait for it. Its random streams, cache rows and results are its own, so
a seeded request gives the same tokens alone or among others.

`Job` is the caller's handle: iterate it for streamed chunks (also with
`async for`), `result()` for the return value, `cancel()` to stop it; a
consumer that stops iterating early cancels it, and a cancelled request frees
its cache rows at the next step.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
import weakref
from collections import deque
from typing import Any, Generator

from .errors import BarkOnnxError
from .work import Emit, Release

logger = logging.getLogger(__name__)


class QueueFullError(BarkOnnxError):
    """Too many requests are waiting: retry later (a server answers 429 with Retry-After)."""


class CancelledError(BarkOnnxError):
    """The request was cancelled before it finished."""


class EngineClosedError(BarkOnnxError):
    """The model was closed; load it again to generate."""


class Job:
    """A submitted request: streamed chunks, a final result, cancellation."""

    def __init__(self, pipeline: Generator, engine: Engine):
        self._gen, self._engine = pipeline, engine
        self._cond = threading.Condition()
        self._chunks: deque = deque()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None
        self.cancelled = False
        # scheduler state: the graph work asked for, the reply to send back, cache rows per stage
        self.pending: Any = None
        self.reply: Any = None
        self.seqs: dict = {}
        self.submitted = time.perf_counter()
        self.first_chunk_s: float | None = None  # seconds from submission to the first streamed chunk

    # ------------------------------------------------------------ caller side

    @property
    def done(self) -> bool:
        return self._done

    def cancel(self) -> None:
        """Stop the request: at once while it waits in the queue, else its rows are freed at the
        next step. A no-op once it is done."""
        if not self._done:
            self.cancelled = True
            self._engine.withdraw(self)

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

    # ------------------------------------------------------------ scheduler side

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the consumer's event loop is closed
                pass

    def _push(self, chunk) -> None:
        if self.first_chunk_s is None:
            self.first_chunk_s = time.perf_counter() - self.submitted
        with self._cond:
            self._chunks.append(chunk)
        self._notify()

    def _finish(self, value: Any = None, error: BaseException | None = None) -> None:
        with self._cond:
            self._value, self._error, self._done = value, error, True
        self._notify()


def _stop_at_exit(ref) -> None:
    engine = ref()
    if engine is not None:
        engine.close(timeout=0)


class Engine:
    """Schedules jobs on an executor; see the module docstring."""

    def __init__(self, executor, max_batch: int = 8, max_queue: int = 64):
        self.executor = executor
        self.max_batch, self.max_queue = max_batch, max_queue
        self._lock = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._active: list[Job] = []
        self._thread: threading.Thread | None = None
        self._closing = False
        self.counts = {"completed": 0, "failed": 0, "cancelled": 0}

    def submit(self, pipeline: Generator) -> Job:
        """Queue a pipeline; raises QueueFullError when max_queue requests already wait."""
        with self._lock:
            if self._closing:
                pipeline.close()
                raise EngineClosedError("this model is closed; load it again to generate")
            if len(self._active) >= self.max_batch and len(self._waiting) >= self.max_queue:
                pipeline.close()
                raise QueueFullError(f"{len(self._waiting)} requests are already waiting (max_queue "
                                     f"{self.max_queue}); retry in a moment")
            job = Job(pipeline, self)
            self._waiting.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="bark-onnx-engine", daemon=True)
                self._thread.start()
                # at interpreter exit, stop between graph calls: a daemon thread killed inside
                # ONNX Runtime aborts the process
                atexit.register(_stop_at_exit, weakref.ref(self))
            self._lock.notify_all()
        return job

    def withdraw(self, job: Job) -> None:
        """A cancelled job leaves the queue at once (its code never ran); a running one at the next step."""
        with self._lock:
            waiting = job in self._waiting
            if waiting:
                self._waiting.remove(job)
            self._lock.notify_all()
        if waiting:
            self._end(job, error=CancelledError("the request was cancelled"), counted="cancelled")

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"waiting": len(self._waiting), "active": len(self._active), "max_batch": self.max_batch,
                    "max_queue": self.max_queue, "rows_in_use": self.executor.rows_in_use(), **self.counts}

    @property
    def alive(self) -> bool:
        """False once the scheduler thread has died (it never should) or the engine is closed."""
        return not self._closing and (self._thread is None or self._thread.is_alive())

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting work, let the admitted and waiting requests finish (up to `timeout`
        seconds), then cancel what is left."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
            thread = self._thread
        if thread is None:
            return
        thread.join(timeout)
        if thread.is_alive():
            with self._lock:
                for job in [*self._active, *self._waiting]:
                    job.cancelled = True
                self._lock.notify_all()
            thread.join()

    # ------------------------------------------------------------ the scheduler thread

    def _run(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._waiting or self._active or self._closing)
                if self._closing and not self._active and not self._waiting:
                    return
                while self._waiting and len(self._active) < self.max_batch:
                    self._active.append(self._waiting.popleft())
                active = list(self._active)
            try:
                self._iteration(active)
            except Exception as err:  # a fault of the engine itself: fail what runs, keep serving
                logger.exception("engine iteration failed")
                for job in active:
                    if not job.done:
                        self._end(job, error=err, counted="failed")

    def _iteration(self, active: list[Job]) -> None:
        ready = []
        for job in active:
            if job.cancelled:
                self._end(job, error=CancelledError("the request was cancelled"), counted="cancelled")
                continue
            if job.pending is None:
                self._advance(job)
            if job.pending is not None and not job.done:
                ready.append(job)
        for job, err in self.executor.run(ready):
            self._end(job, error=err, counted="failed")

    def _advance(self, job: Job) -> None:
        """Run the job's own code until it asks for graph work, streams a chunk, or ends."""
        while True:
            try:
                item = job._gen.send(job.reply)
            except StopIteration as stop:
                self._end(job, value=stop.value, counted="completed")
                return
            except Exception as err:  # the request's own error (bad input found late, a bug): its alone
                self._end(job, error=err, counted="failed")
                return
            job.reply = None
            if isinstance(item, Emit):
                job._push(item.audio)
            elif isinstance(item, Release):
                self.executor.release(job, item.stage)
            else:
                job.pending = item
                return

    def _end(self, job: Job, value: Any = None, error: BaseException | None = None, counted: str = "") -> None:
        self.executor.release_all(job)
        job._gen.close()
        job.pending = None
        with self._lock:
            if job in self._active:
                self._active.remove(job)
            if counted:
                self.counts[counted] += 1
        job._finish(value, error)
