"""The scheduler: every request's state, and the policy that admits them.

    submit ──> waiting ──admit (policy)──> running ──> gone (result, error or cancel)

A request's state is the scheduler's alone; the caller holds only its `Job`.
It is the request's pipeline (a generator of work items, see stages/work.py),
the work it asked for and not yet got, the reply to send in next, the cache
rows it holds per stage, and the chunks of audio it has streamed. The engine
(core.py) moves requests through these states; the executor (executor.py) reads
`pending` and `rows` and writes `reply`.

The policy is the one place that decides who runs and who steps: `FifoPolicy`
admits waiting requests in arrival order while fewer than `max_batch` run, and
says, every round, whose background runs pause (the first-audio pacing); the
executor carries that out with the runs' verbs (runs.py). Another policy gives
the same two methods, `admit` and `pauses`. At most `max_batch + max_queue`
requests are held at once, waiting and running together; `add` refuses the
next with QueueFullError, whatever the timing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Generator

from ..errors import InputError, QueueFullError
from .job import Job

DEFAULT_MAX_BATCH = 8  # requests generated together (cache rows per stage)
DEFAULT_MAX_QUEUE = 64  # requests that may wait beyond those


def check_limits(max_batch: Any, max_queue: Any) -> tuple[int, int]:
    """The engine's two limits, checked: a positive batch and a non-negative queue."""
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise InputError(f"max_batch must be a positive integer, got {max_batch!r}")
    if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 0:
        raise InputError(f"max_queue must be a non-negative integer, got {max_queue!r}")
    return max_batch, max_queue


@dataclass(eq=False)
class RequestState:
    """One request, as the scheduler keeps it."""

    job: Job
    pipeline: Generator
    pending: Any = None  # the work item asked for and not yet run
    reply: Any = None  # the last work item's result, sent into the pipeline when it next runs
    rows: dict[str, Any] = field(default_factory=dict)  # stage -> the decoder Sequence it holds
    chunks_out: int = 0  # chunks of audio it has streamed


Pauses = Callable[[RequestState], bool]  # whether a request's background runs pause this round


class FifoPolicy:
    """First come, first served: admit waiting requests in arrival order while rows are free.

    first_audio_first: a stream's semantic stage runs in the background while its coarse windows
    start (stages/stream.py); until the request's first chunk of audio is out, the semantic run
    pauses: it steps only while the coarse stage waits for its tokens, so the coarse steps that make
    the first chunk are not slowed by it; after that both step in every round. False: both always step.
    """

    def __init__(self, first_audio_first: bool = True):
        self.first_audio_first = first_audio_first

    def admit(self, waiting: deque[RequestState], running: list[RequestState], max_batch: int) -> list[RequestState]:
        free = max(0, max_batch - len(running))
        return [waiting.popleft() for _ in range(min(free, len(waiting)))]

    def pauses(self, state: RequestState) -> bool:
        """Whether the request's background runs pause this round (step only while it awaits their tokens)."""
        return self.first_audio_first and state.chunks_out == 0


class Scheduler:
    """Waiting and running requests; not thread-safe on its own (the engine holds its lock)."""

    def __init__(self, max_batch: int = DEFAULT_MAX_BATCH, max_queue: int = DEFAULT_MAX_QUEUE, policy=None):
        self.max_batch, self.max_queue = check_limits(max_batch, max_queue)
        self.policy = policy or FifoPolicy()
        self.waiting: deque[RequestState] = deque()
        self.running: list[RequestState] = []

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def held(self) -> int:
        """Requests waiting and running together."""
        return len(self.waiting) + len(self.running)

    def add(self, state: RequestState) -> None:
        """Queue a request; QueueFullError when max_batch + max_queue requests are already held.

        The bound counts waiting and running requests together, not the queue alone: requests are
        admitted only inside a step, so a burst that arrives between two steps would otherwise all
        wait while fewer than max_batch run, however many there are."""
        capacity = self.max_batch + self.max_queue
        if self.held >= capacity:
            raise QueueFullError(f"{self.held} requests are already held ({len(self.running)} running, "
                                 f"{len(self.waiting)} waiting; max_batch {self.max_batch} + max_queue "
                                 f"{self.max_queue}); retry in a moment")
        self.waiting.append(state)

    def admit(self) -> list[RequestState]:
        """Move the requests the policy picks from waiting to running; returns them."""
        admitted = self.policy.admit(self.waiting, self.running, self.max_batch)
        self.running.extend(admitted)
        return admitted

    def withdraw(self, job: Job) -> RequestState | None:
        """Take a waiting request out of the queue (its code never ran); None when it is not waiting."""
        for state in self.waiting:
            if state.job is job:
                self.waiting.remove(state)
                return state
        return None

    def remove(self, state: RequestState) -> None:
        if state in self.running:
            self.running.remove(state)
