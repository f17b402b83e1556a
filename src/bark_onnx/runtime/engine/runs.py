"""The decoding runs of one causal stage, as arrays indexed by cache row.

A run (a `Generate` item) holds its request's cache row from its prefill to its
end. Each engine step advances every row that runs by one token in one graph
call, and the bookkeeping of all of them is a handful of NumPy operations: the
draws' inputs gathered, the tokens stored, the stop rules checked, the ended
runs picked out. A request's own code runs only when its run ends.

    row │ active  n   max_new  temperature  eos    min_eos_p  tokens[:n]      uniforms, bands per draw
    0   │ yes     41  768      0.7          10000  0.2        12 873 ... 5    u[0..767], band 0 0 0 ...
    1   │ no                                                                   (free, or between runs)
    2   │ yes     7   60       0.7          -      -          10713 11302 ... u[0..59], band 0 1 0 1 ...

Rows with top-k or top-p draw on the host (kernels/sampling.py's float64 rule, which
filters with a sort) from their logits, with the same uniform numbers.

A background run (a `Spawn`) keeps its tokens here, and here only, from its first draw until its
request releases the row: while it runs and after it ends. Its request reads them with an
`Await`. The pacing of background runs (which of them step) is the policy's (scheduler.py);
the runs only carry it out. Nobody but this class writes its arrays; the executor uses its verbs:

    begin(row, ...)      a run starts on the row
    pause(rows)          background runs step only while their owners wait for tokens
    resume(rows)         they step in every round
    wait_for(row, n)     the owner waits for n tokens: the run steps, paused or not, until it has them
    settle(rows, out)    the step's draws kept, the stop rules applied; the runs that ended
    woken(rows)          the owners whose wait is over
    drop(row)            the row is free (its request released it, or ended)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bark_onnx.kernels.sampling import as_float32_uniform, graph_temperature, sample

from ..constants import SEMANTIC_EOS_TOKEN
from ..stages.work import Generate, RunTokens
from .decoder import CausalDecoder, Draw, Out

PROGRESS_EVERY = 16  # a run's progress callback hears of it every this many tokens
NOT_WAITING = np.iinfo(np.int64).max  # waits_for of a row whose owner waits for nothing


class Runs:
    def __init__(self, decoder: CausalDecoder):
        rows, length = decoder.max_rows, decoder.max_len
        self.decoder = decoder
        self.start = decoder.info.logits_start  # token id = logits column + start
        self.owner: list[Any] = [None] * rows
        self.items: list[Generate | None] = [None] * rows
        self.active = np.zeros(rows, bool)  # running, past its prefill
        self.background = np.zeros(rows, bool)  # its owner is not waiting for its end (a Spawn)
        self.ended = np.zeros(rows, bool)  # a background run that ended, its tokens kept until released
        self.paused = np.zeros(rows, bool)  # a background run that steps only while awaited (the pacing)
        self.waits_for = np.full(rows, NOT_WAITING, np.int64)  # its owner waits for this many tokens
        self.n = np.zeros(rows, np.int64)  # tokens kept so far
        self.max_new = np.zeros(rows, np.int64)
        self.temperature = np.zeros(rows, np.float32)
        self.uniforms = np.zeros((rows, length), np.float64)
        self.bands = np.zeros((rows, length), np.int64)  # the band index of each draw
        self.ranges = np.array(decoder.info.bands or [(0, decoder.info.logits_size)], np.int64)  # band -> [lo, hi)
        self.eos = np.full(rows, -1, np.int64)
        self.min_eos_p = np.full(rows, np.inf, np.float32)
        self.host = np.zeros(rows, bool)
        self.reports = np.zeros(rows, bool)
        self.tokens = np.zeros((rows, length), np.int64)
        self.last = np.zeros(rows, np.int64)  # the token each row feeds its next step
        self.eos_column = SEMANTIC_EOS_TOKEN - self.start if decoder.has_eos else None

    def begin(self, row: int, owner: Any, item: Generate, background: bool = False) -> None:
        """Take the run's numbers into `row` (`draws` then gives its first draw, from the prefill)."""
        k = item.max_new
        self.owner[row], self.items[row] = owner, item
        self.background[row], self.ended[row], self.paused[row] = background, False, False
        self.waits_for[row] = NOT_WAITING
        self.n[row], self.max_new[row] = 0, k
        self.temperature[row] = graph_temperature(item.temperature)
        self.uniforms[row, :k] = 0.0 if item.uniforms is None else item.uniforms[:k]
        self.bands[row, :k] = item.bands[:k]
        self.eos[row] = -1 if item.eos is None else item.eos
        self.min_eos_p[row] = np.inf if item.min_eos_p is None else item.min_eos_p
        self.host[row] = item.top_k is not None or item.top_p is not None
        self.reports[row] = item.progress is not None

    def draws(self, rows: np.ndarray) -> Draw:
        """The next draw of each row: its temperature, its next uniform number, its next band. A row
        drawn on the host feeds temperature 0, so that the graph gives its raw logits."""
        k = self.n[rows]
        t = self.temperature[rows]
        if self.host[rows].any():
            t = np.where(self.host[rows], np.float32(0), t)
        return Draw(t, as_float32_uniform(self.uniforms[rows, k]), self.bands[rows, k])

    def pause(self, rows) -> None:
        """The background runs of `rows` step only while their owners wait for tokens (`wait_for`)."""
        self.paused[rows] = self.background[rows]

    def resume(self, rows) -> None:
        """The runs of `rows` step in every round."""
        self.paused[rows] = False

    def in_background(self) -> list[tuple[int, Any]]:
        """(row, owner) of the background runs under way: those the pacing applies to."""
        return [(row, self.owner[row]) for row in np.flatnonzero(self.active & self.background)]

    def wait_for(self, row: int, n: int) -> None:
        """The owner waits for the run to have n tokens: it steps, paused or not, until then (`woken`)."""
        self.waits_for[row] = n

    def stepping(self) -> np.ndarray:
        """The rows that step this round: running, and not paused unless awaited."""
        return np.flatnonzero(self.active & ~(self.paused & (self.waits_for == NOT_WAITING)))

    def tokens_of(self, row: int) -> np.ndarray:
        return self.tokens[row, : self.n[row]].copy()

    def so_far(self, row: int) -> RunTokens:
        """A background run's tokens so far, and whether it has ended (an Await's reply)."""
        return RunTokens(self.tokens_of(row), bool(self.ended[row]))

    def woken(self, rows: np.ndarray) -> list[tuple[Any, RunTokens]]:
        """(owner, tokens so far) of the rows whose owners waited for as many tokens as they now have."""
        ready = rows[self.n[rows] >= self.waits_for[rows]]
        self.waits_for[ready] = NOT_WAITING
        return [(self.owner[row], self.so_far(row)) for row in ready]

    def settle(self, rows: np.ndarray, out: Out, draw: Draw) -> list[tuple[Any, np.ndarray, bool]]:
        """Take each row's draw from `out` (made with `draw`), apply the stop rules; returns (owner,
        tokens, background) of the runs that ended. A foreground run's row is free for the owner's
        next run; a background run's keeps its tokens until the owner releases it."""
        token, eos_p = self.drawn(rows, out, draw)
        eos_p = np.zeros(len(rows), np.float32) if eos_p is None else eos_p.astype(np.float32, copy=True)
        host = np.flatnonzero(self.host[rows])
        if host.size:
            self._host_draws(rows, host, out.logits, token, eos_p)
        k = self.n[rows]
        ends = (self.eos[rows] >= 0) & ((token == self.eos[rows]) | (eos_p >= self.min_eos_p[rows]))
        kept = rows[~ends]
        self.tokens[kept, k[~ends]] = token[~ends]
        self.n[kept] += 1
        self.last[rows] = token
        done = ends | (self.n[rows] >= self.max_new[rows])
        self.active[rows] = ~done
        told = rows[self.reports[rows] & ((self.n[rows] % PROGRESS_EVERY == 0) | done)]
        for row in told:
            self.items[row].progress(int(self.n[row]))
        finished = []
        for row in rows[done]:
            finished.append((self.owner[row], self.tokens_of(row), bool(self.background[row])))
            if self.background[row]:
                self.ended[row], self.waits_for[row] = True, NOT_WAITING  # the owner hears of the end itself
            else:
                self.drop(row)
        return finished

    def drawn(self, rows: np.ndarray, out: Out, draw: Draw) -> tuple[np.ndarray, np.ndarray | None]:
        """(token ids, P(EOS) or None) of the step's draws, as the graph made them (benchmarks/host_cost.py
        draws them on the host instead, to time both)."""
        return out.token.astype(np.int64, copy=True), out.eos_p

    def drop(self, row: int) -> None:
        self.active[row] = self.background[row] = self.ended[row] = self.paused[row] = False
        self.waits_for[row] = NOT_WAITING
        self.owner[row] = self.items[row] = None

    def _host_draws(self, rows, host, logits, token, eos_p) -> None:
        """Bark's float64 draw, with its top-k / top-p filter, for the rows that ask for one."""
        for i in host:
            row = rows[i]
            item, k = self.items[row], self.n[row]
            lo, hi = self.ranges[self.bands[row, k]]
            t, p = sample(logits[i:i + 1, lo:hi], item.temperature, self.uniforms[row, k:k + 1], item.top_k, item.top_p)
            token[i] = self.start + lo + t[0]
            column = self.eos[row] - self.start - lo
            eos_p[i] = p[0, column] if self.eos[row] >= 0 and 0 <= column < hi - lo else 0.0
