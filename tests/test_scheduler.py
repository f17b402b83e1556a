"""The engine driven one `step()` at a time: admission, runs over many rounds, background runs and the
requests that await them, cancellation, and the bound on the requests held."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from bark_onnx import Bark, CancelledError, QueueFullError, Request
from bark_onnx.runtime.engine.core import Engine
from bark_onnx.runtime.engine.scheduler import FifoPolicy, Scheduler
from bark_onnx.runtime.stages.work import Await, Emit, Generate, Release, RunTokens, Spawn


def generate(stage: str, max_new: int) -> Generate:
    return Generate(stage, np.zeros(3, np.int64), max_new, None, None, np.zeros(max_new, np.int64))


class FakeRun:
    def __init__(self, state, item: Generate, background: bool):
        self.state, self.left, self.background = state, item.max_new, background
        self.tokens: list[int] = []
        self.wake_at: int | None = None  # its owner awaits this many tokens
        self.ended = False  # a background run's tokens stay here until its request releases the row


class FakeExecutor:
    """The executor's contract with scripted arithmetic: a Generate holds a cache row and draws one
    token a round (the round's number), its first in the round it starts, and is answered when it
    has drawn max_new; a Spawn's run does the same in the background while its request goes on, and
    an Await is answered once that run has the tokens asked for, or has ended; a background run whose
    request the policy `pauses` steps only while awaited. `rounds` records what stepped in each round:
    (request, stage) per run."""

    def __init__(self):
        self.rounds: list[list[tuple[str, str]]] = []
        self.runs: dict[tuple[int, str], FakeRun] = {}
        self.rows: set[tuple[int, str]] = set()

    def rows_in_use(self) -> int:
        return len(self.rows)

    def run(self, states, pauses):
        for state in states:
            item = state.pending
            if isinstance(item, (Generate, Spawn)):
                run = item.run if isinstance(item, Spawn) else item
                state.rows[run.stage] = (id(state), run.stage)
                self.rows.add(state.rows[run.stage])
                self.runs[state.rows[run.stage]] = FakeRun(state, run, isinstance(item, Spawn))
                if isinstance(item, Spawn):
                    self._answer(state, None)
            elif isinstance(item, Await):
                self._await(state, item)
            else:
                raise TypeError(f"the fake runs no {type(item).__name__}")
        round_no, stepped = len(self.rounds), []
        for key, run in list(self.runs.items()):
            if run.ended or (run.background and pauses(run.state) and not self._awaited(run, key)):
                continue
            run.tokens.append(round_no)
            run.left -= 1
            stepped.append((getattr(run.state.job, "name", "?"), key[1]))
            self._settle(key, run)
        self.rounds.append(stepped)
        return []

    @staticmethod
    def _awaited(run: FakeRun, key) -> bool:
        pending = run.state.pending
        return isinstance(pending, Await) and pending.stage == key[1]

    def _await(self, state, item: Await) -> None:
        run = self.runs[state.rows[item.stage]]
        if run.ended or len(run.tokens) >= item.n:
            self._answer(state, RunTokens(np.array(run.tokens), run.ended))
        else:
            run.wake_at = item.n

    def _settle(self, key, run: FakeRun) -> None:
        state = run.state
        if run.left == 0:
            if not run.background:
                del self.runs[key]
                self._answer(state, run.tokens)
                return
            run.ended = True
            if self._awaited(run, key):
                self._answer(state, RunTokens(np.array(run.tokens), True))
        elif run.wake_at is not None and len(run.tokens) >= run.wake_at:
            run.wake_at = None
            self._answer(state, RunTokens(np.array(run.tokens), False))

    def release(self, state, stage):
        key = state.rows.pop(stage, None)
        if key is not None:
            self.rows.discard(key)
            self.runs.pop(key, None)

    def release_all(self, state):
        for stage in list(state.rows):
            self.release(state, stage)

    @staticmethod
    def _answer(state, reply):
        state.reply, state.pending = reply, None


def one_run(steps: int, emit: bool = False):
    """A request of one decoding run of `steps` tokens; emits them as a chunk when asked to."""
    tokens = yield generate("semantic", steps)
    if emit:
        yield Emit(np.array(tokens))
    yield Release("semantic")
    return tokens


def engine(max_batch=2, max_queue=2, policy=None):
    """An engine stepped by hand around the fake; background runs step every round unless the test
    gives a policy that paces them."""
    policy = policy or FifoPolicy(first_audio_first=False)
    return Engine(FakeExecutor(), Scheduler(max_batch, max_queue, policy), background=False)


def submit(eng, name, pipeline):
    job = eng.submit(pipeline)
    job.name = name
    return job


def run_all(eng) -> int:
    rounds = 0
    while eng.step():
        rounds += 1
    return rounds


def test_runs_span_rounds_and_admission_waits_for_free_rows():
    eng = engine(max_batch=2)
    a, b, c = (submit(eng, n, one_run(3)) for n in "abc")
    assert eng.stats()["waiting"] == 3 and eng.stats()["active"] == 0  # nothing runs before a step
    eng.step()
    assert eng.executor.rounds[-1] == [("a", "semantic"), ("b", "semantic")]  # c waits: two rows
    eng.step()
    assert not a.done and eng.stats()["waiting"] == 1 and eng.executor.rows_in_use() == 2
    eng.step()  # the third token: a and b are answered, but their code runs on at the next step
    assert not a.done
    eng.step()  # a and b end and free their rows; c is admitted and starts in this very round
    assert a.result(0) == [0, 1, 2] and b.result(0) == [0, 1, 2]
    assert eng.executor.rounds[-1] == [("c", "semantic")]
    run_all(eng)
    assert c.result(0) == [3, 4, 5]
    assert eng.stats()["completed"] == 3 and eng.stats()["rows_in_use"] == 0 and not eng.step()


def test_a_request_s_code_runs_only_when_its_run_ends():
    advanced = []

    def counted(steps):
        advanced.append("start")
        tokens = yield generate("coarse", steps)
        advanced.append("end")
        return tokens

    eng = engine()
    job = submit(eng, "a", counted(5))
    for _ in range(5):
        eng.step()
        assert advanced == ["start"]
    eng.step()
    assert advanced == ["start", "end"] and job.result(0) == [0, 1, 2, 3, 4]


def streamed(semantic: int, window: int, windows: int, log: list):
    """A stream's shape: a background semantic run; coarse windows, each awaiting the semantic tokens
    it reads, then a run of its own; the semantic tokens awaited once more at the end."""
    yield Spawn(generate("semantic", semantic))
    for w in range(windows):
        so_far = yield Await("semantic", (w + 1) * 2)
        log.append(("await", len(so_far.tokens), so_far.ended))
        coarse = yield generate("coarse", window)
        log.append(("window", coarse))
        yield Emit(np.array(coarse))
    yield Release("coarse")
    so_far = yield Await("semantic", 10**6)
    log.append(("await", len(so_far.tokens), so_far.ended))
    yield Release("semantic")
    return so_far.tokens.tolist()


def test_a_background_run_steps_beside_the_runs_that_await_it():
    log = []
    eng = engine()
    job = submit(eng, "s", streamed(semantic=6, window=2, windows=2, log=log))
    run_all(eng)
    rounds = eng.executor.rounds
    assert rounds[0] == [("s", "semantic")]  # spawned: the request goes on while its run steps
    assert log[0] == ("await", 2, False)  # answered once the run had two tokens, not at its end
    both = [r for r in rounds if len(r) == 2]
    assert both and all(set(r) == {("s", "semantic"), ("s", "coarse")} for r in both)  # one call each a round
    assert log[-1] == ("await", 6, True)  # the run had ended: all its tokens, marked ended
    assert job.result(0) == [0, 1, 2, 3, 4, 5]
    assert [int(c[0]) for c in job] == [w[1][0] for w in log if w[0] == "window"]
    assert eng.stats()["rows_in_use"] == 0


def test_first_audio_pacing_holds_a_background_run_to_the_rounds_awaiting_it_until_a_chunk_is_out():
    paced, free = engine(policy=FifoPolicy(first_audio_first=True)), engine()
    jobs = [submit(eng, "s", streamed(semantic=12, window=3, windows=3, log=[])) for eng in (paced, free)]
    for eng in (paced, free):
        run_all(eng)
    rounds = paced.executor.rounds
    coarse = [i for i, r in enumerate(rounds) if ("s", "coarse") in r]
    assert rounds[0] == []  # spawned, not yet awaited: paused
    assert all(rounds[i] == [("s", "coarse")] for i in coarse[:3])  # the first window runs alone
    assert any(set(rounds[i]) == {("s", "semantic"), ("s", "coarse")} for i in coarse[3:])  # after its chunk
    unpaced = free.executor.rounds
    assert unpaced[0] == [("s", "semantic")]
    first = next(i for i, r in enumerate(unpaced) if ("s", "coarse") in r)
    assert set(unpaced[first]) == {("s", "semantic"), ("s", "coarse")}  # without pacing both step at once
    assert [len(job.result(0)) for job in jobs] == [12, 12]


def test_an_await_of_a_run_that_already_ended_is_answered_in_its_round():
    log = []
    eng = engine()
    job = submit(eng, "s", streamed(semantic=2, window=4, windows=1, log=log))
    run_all(eng)
    # the run ended in the round that gave the second token: the first await hears so too
    assert log == [("await", 2, True), ("window", [2, 3, 4, 5]), ("await", 2, True)]
    assert job.result(0) == [0, 1]


def test_a_cancel_in_the_middle_of_runs_frees_their_rows_and_the_others_go_on():
    eng = engine(max_batch=2, max_queue=1)
    log = []
    stream = submit(eng, "s", streamed(semantic=20, window=5, windows=3, log=log))
    other = submit(eng, "o", one_run(8))
    waiting = submit(eng, "w", one_run(2))
    for _ in range(4):
        eng.step()
    assert eng.executor.rows_in_use() == 3  # the stream's two runs and the other's
    stream.cancel()
    assert not stream.done  # a running request ends at the next step
    eng.step()
    with pytest.raises(CancelledError):
        stream.result(0)
    assert eng.executor.rows_in_use() == 2 and ("s", "semantic") not in eng.executor.rounds[-1]
    assert eng.executor.rounds[-1] == [("o", "semantic"), ("w", "semantic")]  # w took the freed place
    run_all(eng)
    assert other.result(0) == list(range(8)) and waiting.result(0) == [4, 5]
    assert eng.stats()["cancelled"] == 1 and eng.stats()["rows_in_use"] == 0


def test_a_waiting_request_cancelled_ends_at_once():
    eng = engine(max_batch=1, max_queue=1)
    running, waiting = submit(eng, "a", one_run(5)), submit(eng, "b", one_run(5))
    eng.step()
    waiting.cancel()  # its code never ran: it ends in the call
    with pytest.raises(CancelledError):
        waiting.result(0)
    assert eng.stats()["waiting"] == 0
    submit(eng, "c", one_run(1))  # its place is free again
    run_all(eng)
    assert running.result(0) == [0, 1, 2, 3, 4]


def test_chunks_reach_the_job_in_the_round_they_are_made():
    eng = engine()
    job = submit(eng, "a", one_run(3, emit=True))
    for _ in range(3):
        eng.step()
        assert job.first_chunk_s is None
    eng.step()  # the run's answer comes back and the chunk goes out at the request's next advance
    assert job.first_chunk_s is not None
    run_all(eng)
    assert [c.tolist() for c in job] == [[0, 1, 2]]


def _burst(eng, n: int) -> tuple[list, int]:
    """n threads submit at once (a barrier) before any step; (accepted jobs, refusals)."""
    barrier, accepted, refused, lock = threading.Barrier(n), [], [], threading.Lock()

    def one(i):
        barrier.wait()
        try:
            job = eng.submit(one_run(2))
        except QueueFullError:
            with lock:
                refused.append(i)
            return
        with lock:
            accepted.append(job)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return accepted, len(refused)


def test_at_most_max_batch_plus_max_queue_requests_are_held_whatever_the_timing():
    eng = engine(max_batch=2, max_queue=2)
    accepted, refused = _burst(eng, 40)  # all before the first step: none runs yet
    assert len(accepted) == 4 and refused == 36
    eng.step()  # two run, two wait: still four held
    with pytest.raises(QueueFullError, match="max_batch 2 \\+ max_queue 2"):
        eng.submit(one_run(1))
    run_all(eng)
    assert all(job.result(0) for job in accepted)
    more, refused = _burst(eng, 10)
    assert len(more) == 4 and refused == 6  # the places come back as requests end


def test_a_burst_on_a_real_model_holds_its_bound(model_dirs):
    """Bark.load(..., background=False): threads submit at once, the caller steps the engine."""
    tts = Bark.load(model_dirs["suno-tiny"], max_batch=2, max_queue=2, background=False)
    request = Request.make("hello world", seed=0, max_gen_duration_s=0.3, stream=True)
    barrier, jobs, refused, lock = threading.Barrier(16), [], [], threading.Lock()

    def one():
        barrier.wait()
        try:
            job = tts.submit(request)
        except QueueFullError as err:
            with lock:
                refused.append(err)
            return
        with lock:
            jobs.append(job)

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(jobs) == 4 and len(refused) == 12 and tts.stats()["waiting"] == 4
    while tts.step():
        pass
    results = [job.result(0) for job in jobs]
    assert all(np.array_equal(r.audio, results[0].audio) for r in results)  # one seed: one audio
    assert tts.stats()["rows_in_use"] == 0
    held = [tts.submit(request) for _ in range(3)]
    tts.step()
    tts.close()  # nothing would step them again: a manual model's close ends what it holds
    for job in held:
        with pytest.raises(CancelledError, match="closed"):
            job.result(0)
    assert tts.stats()["rows_in_use"] == 0 and tts.stats()["cancelled"] == 3


def test_step_is_for_a_model_that_does_not_step_itself(tts):
    with pytest.raises(ValueError, match="background=False"):
        tts["suno-tiny"].step()


def test_a_policy_decides_who_runs():
    class NewestFirst(FifoPolicy):
        def admit(self, waiting, running, max_batch):
            picked = []
            while waiting and len(running) + len(picked) < max_batch:
                picked.append(waiting.pop())
            return picked

    eng = engine(max_batch=1, max_queue=4, policy=NewestFirst())
    for name in "xyz":
        submit(eng, name, one_run(1))
    eng.step()
    assert eng.executor.rounds[-1] == [("z", "semantic")]


def test_a_failing_request_fails_alone():
    def broken():
        yield generate("semantic", 2)
        raise ValueError("a bug in one request")

    eng = engine()
    bad, good = submit(eng, "bad", broken()), submit(eng, "good", one_run(3))
    run_all(eng)
    with pytest.raises(ValueError, match="a bug"):
        bad.result(0)
    assert good.result(0) == [0, 1, 2] and eng.stats()["failed"] == 1 and eng.stats()["rows_in_use"] == 0


def test_a_real_request_stepped_by_hand_equals_the_engine_thread(model_dirs, tiny_engine):
    """A model that steps only when told gives the Generation of one that steps itself."""
    request = Request.make("hello world", "announcer", seed=4, max_gen_duration_s=0.6)
    expected = tiny_engine.submit(request).result(timeout=300)
    manual = Bark.load(model_dirs["suno-tiny"], max_batch=4, background=False)
    job = manual.submit(request)
    rounds = 0
    while manual.step():
        rounds += 1
    got = job.result(0)
    for field in ("semantic", "coarse", "fine", "audio"):
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))
    assert rounds >= len(got.semantic) and manual.stats()["rows_in_use"] == 0
    # the shorthands step a manual model themselves, in the caller's thread
    np.testing.assert_array_equal(manual.generate("hello world", "announcer", seed=4, max_gen_duration_s=0.6,
                                                  silent=True), expected.audio)
    manual.close()
