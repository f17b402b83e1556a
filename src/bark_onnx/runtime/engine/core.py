"""The engine: many requests on one model, advanced together (continuous batching).

Every request is a pipeline generator (see stages/work.py) that asks for one
piece of graph work at a time. `Engine.step()` runs one round:

    admit       waiting requests join (the scheduler's policy, scheduler.py)
    advance     each request whose last work is done runs its own code until it asks for graph
                work, streams a chunk or ends
    run         the new work starts, and every decoding run under way takes one step, batched
                across requests (executor.py, runs.py), but the background runs that the policy
                pauses (its first-audio pacing) step only while their requests await them
    deliver     results go back into each request at its next advance; chunks and ends to its Job

A background thread calls `step()` while there is work (`Engine(..., background=False)`
leaves that to the caller: `Bark.load(..., background=False)` then `tts.step()`). A
request joins when it is admitted and leaves at its own end; the others never wait
for it. Its random streams, cache rows and results are its own, so a seeded request
gives the same tokens alone or among others. A cancelled request frees its cache
rows at the next step. At most max_batch + max_queue requests are held at once
(scheduler.py).
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from typing import Any, Generator

from ..errors import CancelledError, EngineClosedError
from ..stages.work import Emit, Release
from .job import Job
from .scheduler import RequestState, Scheduler

logger = logging.getLogger(__name__)


def _stop_at_exit(ref) -> None:
    engine = ref()
    if engine is not None:
        engine.close(timeout=0)


class Engine:
    """Runs the requests submitted from any thread; see the module docstring."""

    def __init__(self, executor, scheduler: Scheduler | None = None, background: bool = True):
        self.executor = executor
        self.scheduler = scheduler or Scheduler()
        self.background = background
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self.counts = {"completed": 0, "failed": 0, "cancelled": 0}

    @property
    def max_batch(self) -> int:
        return self.scheduler.max_batch

    @property
    def max_queue(self) -> int:
        return self.scheduler.max_queue

    def submit(self, pipeline: Generator) -> Job:
        """Queue a pipeline; raises QueueFullError when max_batch + max_queue requests are already
        held (waiting and running together)."""
        with self._lock:
            try:
                if self._closing:
                    raise EngineClosedError("this model is closed; load it again to generate")
                job = Job(self.withdraw)
                self.scheduler.add(RequestState(job, pipeline))
            except Exception:
                pipeline.close()
                raise
            if self.background and self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="bark-onnx-engine", daemon=True)
                self._thread.start()
                # at interpreter exit, stop between graph calls: a daemon thread killed inside
                # ONNX Runtime aborts the process
                atexit.register(_stop_at_exit, weakref.ref(self))
            self._lock.notify_all()
        return job

    def withdraw(self, job: Job) -> None:
        """A cancelled job leaves the queue at once (its code never ran); a running one at the next step."""
        with self._lock:
            state = self.scheduler.withdraw(job)
            self._lock.notify_all()
        if state is not None:
            self._end(state, error=CancelledError("the request was cancelled"), counted="cancelled")

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"waiting": len(self.scheduler.waiting), "active": len(self.scheduler.running),
                    "max_batch": self.max_batch, "max_queue": self.max_queue,
                    "rows_in_use": self.executor.rows_in_use(), **self.counts}

    @property
    def alive(self) -> bool:
        """False once the engine thread has died (it never should) or the engine is closed."""
        return not self._closing and (self._thread is None or self._thread.is_alive())

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting work, let the admitted and waiting requests finish (up to `timeout`
        seconds), then cancel what is left. An engine the caller steps (background=False) cancels
        them at once: nothing would finish them."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
            thread = self._thread
        if thread is None:  # no thread steps this engine (background=False): what it holds ends now
            self._cancel_held()
            return
        thread.join(timeout)
        if thread.is_alive():
            with self._lock:
                for state in [*self.scheduler.running, *self.scheduler.waiting]:
                    state.job.cancelled = True
                self._lock.notify_all()
            thread.join()

    def _cancel_held(self) -> None:
        with self._lock:
            held = [*self.scheduler.running, *self.scheduler.waiting]
            self.scheduler.waiting.clear()
        for state in held:
            self._end(state, error=CancelledError("the model was closed before the request ended"),
                      counted="cancelled")

    # ------------------------------------------------------------ one round

    def step(self) -> bool:
        """One round: admit, advance every running request to its next graph work, run that work
        batched, deliver. Returns False when no request was running or waiting."""
        with self._lock:
            self.scheduler.admit()
            running = list(self.scheduler.running)
        if not running:
            return False
        try:
            new, batch = [], running
            while batch:
                for state in batch:
                    if state.job.cancelled:
                        self._end(state, error=CancelledError("the request was cancelled"), counted="cancelled")
                    elif state.pending is None:
                        self._advance(state)
                        if state.pending is not None:
                            new.append(state)
                with self._lock:  # rows freed by requests that ended just now go to waiting ones this round
                    batch = self.scheduler.admit()
                running += batch
            # the work asked for this round starts; the decoding runs under way take one step each,
            # the background runs that the policy pauses only where their requests await them
            for state, err in self.executor.run(new, self.scheduler.policy.pauses):
                self._end(state, error=err, counted="failed")
        except Exception as err:  # a fault of the engine itself: fail what runs, keep serving
            logger.exception("engine step failed")
            for state in running:
                if not state.job.done:
                    self._end(state, error=err, counted="failed")
        return True

    def _loop(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self.scheduler.has_work or self._closing)
                if self._closing and not self.scheduler.has_work:
                    return
            self.step()

    def _advance(self, state: RequestState) -> None:
        """Run the request's own code until it asks for graph work, streams a chunk, or ends."""
        while True:
            try:
                item = state.pipeline.send(state.reply)
            except StopIteration as stop:
                self._end(state, value=stop.value, counted="completed")
                return
            except Exception as err:  # the request's own error (bad input found late, a bug): its alone
                self._end(state, error=err, counted="failed")
                return
            state.reply = None
            if isinstance(item, Emit):
                state.job.push(item.audio)
                state.chunks_out += 1
            elif isinstance(item, Release):
                self.executor.release(state, item.stage)
            else:
                state.pending = item
                return

    def _end(self, state: RequestState, value: Any = None, error: BaseException | None = None,
             counted: str = "") -> None:
        self.executor.release_all(state)
        state.pipeline.close()
        state.pending = None
        with self._lock:
            self.scheduler.remove(state)
            if counted:
                self.counts[counted] += 1
        state.job.finish(value, error)
