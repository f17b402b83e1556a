"""The engine driven one `step()` at a time: admission, the work of each round, cancellation, the queue."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from bark_onnx import CancelledError, QueueFullError, Request
from bark_onnx.runtime.engine.core import Engine
from bark_onnx.runtime.engine.scheduler import FifoPolicy, Scheduler
from bark_onnx.runtime.stages.work import Emit, Release


@dataclass
class Prefill:  # stand-ins for graph work: the fake executor answers any item
    stage: str
    ids: np.ndarray


@dataclass
class Step:
    stage: str
    token: int


class FakeExecutor:
    """Answers every work item with a number and records each round's batch."""

    def __init__(self):
        self.rounds: list[list[tuple[str, object]]] = []
        self.open: dict[int, set] = {}

    def rows_in_use(self) -> int:
        return sum(len(v) for v in self.open.values())

    def run(self, states, pauses):
        batch = []
        for state in states:
            item = state.pending
            stage = getattr(item, "stage", None)
            if isinstance(item, Prefill):
                state.rows[stage] = object()
                self.open.setdefault(id(state), set()).add(stage)
            batch.append((state.job.name, type(item).__name__))
            state.reply, state.pending = len(self.rounds), None
        self.rounds.append(batch)
        return []

    def release(self, state, stage):
        if state.rows.pop(stage, None) is not None:
            self.open[id(state)].discard(stage)

    def release_all(self, state):
        for stage in list(state.rows):
            self.release(state, stage)


def counter(steps: int, emit_every: int = 0):
    """A pipeline: a prefill, then `steps` steps; emits the round it was answered in every so often."""
    seen = [(yield Prefill("semantic", np.zeros(3, np.int64)))]
    for i in range(steps):
        seen.append((yield Step("semantic", i)))
        if emit_every and (i + 1) % emit_every == 0:
            yield Emit(np.array([seen[-1]]))
    yield Release("semantic")
    return seen


def engine(max_batch=2, max_queue=2):
    return Engine(FakeExecutor(), Scheduler(max_batch, max_queue), background=False)


def submit(eng, name, pipeline):
    job = eng.submit(pipeline)
    job.name = name
    return job


def test_a_step_admits_in_order_and_batches_the_running_requests():
    eng = engine(max_batch=2)
    a, b, c = (submit(eng, n, counter(2)) for n in "abc")
    assert eng.stats()["waiting"] == 3 and eng.stats()["active"] == 0  # nothing runs before a step
    assert eng.step()
    assert eng.executor.rounds[-1] == [("a", "Prefill"), ("b", "Prefill")]  # c waits: two rows
    assert eng.stats()["waiting"] == 1
    eng.step()
    assert eng.executor.rounds[-1] == [("a", "Step"), ("b", "Step")]
    eng.step()
    eng.step()  # a and b end (and free their rows) while c is admitted in the same round
    assert a.result(0) == [0, 1, 2] and b.result(0) == [0, 1, 2]
    assert eng.executor.rounds[-1] == [("c", "Prefill")]
    while eng.step():
        pass
    assert c.result(0) == [3, 4, 5]
    assert eng.stats()["completed"] == 3 and eng.stats()["rows_in_use"] == 0 and not eng.step()


def test_chunks_reach_the_job_in_the_round_they_are_made():
    eng = engine()
    job = submit(eng, "a", counter(4, emit_every=2))
    eng.step()
    eng.step()
    eng.step()  # the second step's answer comes back and its chunk is emitted at the next advance
    eng.step()
    assert [int(c[0]) for c in job._chunks] == [2]
    while eng.step():
        pass
    assert [int(c[0]) for c in job] == [2, 4]


def test_cancel_frees_rows_at_the_next_step_and_a_waiting_one_at_once():
    eng = engine(max_batch=1, max_queue=1)
    running = submit(eng, "a", counter(5))
    waiting = submit(eng, "b", counter(5))
    eng.step()
    assert eng.executor.rows_in_use() == 1
    waiting.cancel()  # its code never ran: it ends now
    with pytest.raises(CancelledError):
        waiting.result(0)
    running.cancel()
    assert not running.done  # the engine notices at its next step
    eng.step()
    with pytest.raises(CancelledError):
        running.result(0)
    assert eng.executor.rows_in_use() == 0 and eng.stats()["cancelled"] == 2 and not eng.step()


def test_the_queue_is_bounded_and_a_policy_decides_who_runs():
    eng = engine(max_batch=1, max_queue=1)
    submit(eng, "a", counter(1))
    eng.step()
    submit(eng, "b", counter(1))
    with pytest.raises(QueueFullError):
        submit(eng, "c", counter(1))

    class NewestFirst(FifoPolicy):
        def admit(self, waiting, running, max_batch):
            picked = []
            while waiting and len(running) + len(picked) < max_batch:
                picked.append(waiting.pop())
            return picked

    eng = Engine(FakeExecutor(), Scheduler(1, 4, NewestFirst()), background=False)
    for name in "xyz":
        submit(eng, name, counter(0))
    eng.step()
    assert eng.executor.rounds[-1] == [("z", "Prefill")]


def test_a_failing_request_fails_alone():
    def broken():
        yield Prefill("semantic", np.zeros(3, np.int64))
        raise ValueError("a bug in one request")

    eng = engine()
    bad, good = submit(eng, "bad", broken()), submit(eng, "good", counter(2))
    while eng.step():
        pass
    with pytest.raises(ValueError, match="a bug"):
        bad.result(0)
    assert good.result(0) == [0, 1, 2] and eng.stats()["failed"] == 1


def test_a_real_request_stepped_by_hand_equals_the_engine_threads(tiny_engine):
    """The model's own executor under an engine that only steps when told: the same Generation."""
    request = Request.make("hello world", "announcer", seed=4, max_gen_duration_s=0.6)
    expected = tiny_engine.submit(request).result(timeout=300)
    eng = Engine(tiny_engine.engine.executor, Scheduler(4, 0), background=False)
    job = eng.submit(tiny_engine._pipeline(request))
    rounds = 0
    while eng.step():
        rounds += 1
    got = job.result(0)
    for field in ("semantic", "coarse", "fine", "audio"):
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))
    assert rounds >= len(got.semantic) and tiny_engine.stats()["rows_in_use"] == 0
