"""Runs the graph work that requests ask for, batching the decoding steps across requests.

    Generate(stage)  a prefill (one call for the prompts of one length that start in a round,
                     where their rows are consecutive and none keeps a prefix; see decoder.py),
                     then the request's row joins its stage's runs (runs.py): one batched call a
                     step advances every running row of the stage
    Spawn(Generate)  the same, in the background: the request goes on, and its Await(stage, n)
                     is answered from the run's own tokens (runs.py) once it has n or has ended;
                     until its request's first audio, the policy may pause it (scheduler.py)
    FinePass         a codebook of a fine window, drawn in the graph
    Decode           a chunk of codes to audio
                     both are one-call items: those of one shape (window length and codebook,
                     or frames) go fine_batch (codec_batch) at a time in one call, padded to
                     that many rows (1: one call per request; see below)

A request's tokens and audio must not depend on which others ran beside it. A step's rows are
exact because a row's arithmetic is its own (on a GPU steps always run every row, so their
shape never changes; see decoder.py); on the CPU a prefill's rows are too (each matrix row is
summed in the same order whatever the batch), but on a GPU kernels are picked by shape, so
there prefills run one request a call. Fine windows and codec chunks run at a fixed batch, the
unused rows padded, so a row sees the same shapes alone or among others (the codec's
convolutions round differently at another batch size, by ~1e-7, even on the CPU).

On the CPU both run one a call by default. Measured there (bark-small int8, streams of 6 s,
benchmarks/README.md): codec chunks 4 a call give 8 concurrent streams 8 % more audio per second
but cost a lone stream 18 % (it pays for 4 rows); fine windows padded to 4 cost a lone request
twice its fine time, and batched unpadded they gain nothing. On a GPU, where a call of a few rows
costs about what one does, both run 4 a call (not yet measured). A decode longer than a stream's
chunk (a one-shot request's whole audio) always runs alone: four times its activations would
raise the peak memory, and a long call gains nothing from company.

Only the engine's thread calls this; it is the one place sessions run.
"""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort

from bark_onnx.kernels.sampling import as_float32_uniform, graph_temperature

from ..errors import InputError
from ..stages.work import Await, Decode, FinePass, Generate, RunTokens, Spawn
from .decoder import CausalDecoder
from .runs import Runs
from .scheduler import Pauses, RequestState

logger = logging.getLogger(__name__)

WINDOW_BATCH = 4  # fine windows and codec chunks per call on a GPU, see above
CODEC_BATCH_FRAMES = 320  # decodes of up to this many frames share calls (a stream's chunks are shorter)


class Executor:
    def __init__(self, decoders: dict[str, CausalDecoder], fine: ort.InferenceSession, codec: ort.InferenceSession,
                 fine_batch: int = 1, codec_batch: int = 1):
        for name, value in (("fine_batch", fine_batch), ("codec_batch", codec_batch)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name} must be an integer >= 1, got {value!r}")
        self.decoders, self.fine, self.codec = decoders, fine, codec
        self.fine_batch, self.codec_batch = fine_batch, codec_batch
        self.runs = {stage: Runs(decoder) for stage, decoder in decoders.items()}

    def rows_in_use(self) -> int:
        return sum(d.rows_in_use for d in self.decoders.values())

    def release(self, state: RequestState, stage: str) -> None:
        seq = state.rows.pop(stage, None)
        if seq is not None:
            self.runs[stage].drop(seq.row)
            self.decoders[stage].close(seq)

    def release_all(self, state: RequestState) -> None:
        for stage in list(state.rows):
            self.release(state, stage)

    def run(self, new: list[RequestState], pauses: Pauses) -> list[tuple[RequestState, Exception]]:
        """Start the work items `new` asked for this round, then step every stage's runs once, the
        background runs of the requests that `pauses` names (the policy's pacing) only where awaited.
        A request whose item is done gets `reply` set and `pending` cleared; returns the (request,
        error) pairs of graph calls that failed (their requests only)."""
        failures = []
        prefills: dict[tuple, list[RequestState]] = {}
        calls: dict[tuple, list[RequestState]] = {}
        for state in new:
            item = state.pending
            run = _run_of(item)
            if run is not None:  # prompts of one length go in one call (the decoder decides)
                prefills.setdefault((run.stage, len(run.ids)), []).append(state)
            elif isinstance(item, (FinePass, Decode)):  # one-call items of one shape share calls
                calls.setdefault(_call_shape(item), []).append(state)
            else:
                try:
                    self._await(state, item)
                except Exception as err:  # a request's own fault (no such run): it fails, others go on
                    logger.exception("a %s item failed", type(item).__name__)
                    failures.append((state, err))
        for (stage, _), states in prefills.items():
            try:
                self._prefill(stage, states)
            except Exception as err:  # an ONNX Runtime failure: these requests fail, others go on
                logger.exception("a %s prefill failed for %d request(s)", stage, len(states))
                failures += [(state, err) for state in states]
        for states in calls.values():
            failures += self._one_call_items(states)
        for stage in self.runs:
            failures += self._step(stage, pauses)
        return failures

    def _await(self, state: RequestState, item) -> None:
        """An Await: answered now from the background run's tokens, or once it has as many."""
        if not isinstance(item, Await):
            raise TypeError(f"unknown work item {type(item).__name__}")
        runs, row = self.runs[item.stage], state.rows[item.stage].row
        if runs.ended[row] or runs.n[row] >= item.n:
            self._answer(state, runs.so_far(row))
        else:
            runs.wait_for(row, item.n)

    def _prefill(self, stage: str, states: list[RequestState]) -> None:
        """The prefills of runs whose prompts have one length, each into its request's row (a row is
        opened at the request's first run of the stage), and each run's first draw. A spawned run's
        request goes on at once."""
        decoder, runs = self.decoders[stage], self.runs[stage]
        for state in states:
            if stage not in state.rows:
                state.rows[stage] = decoder.open()
        seqs = [state.rows[stage] for state in states]
        items = [_run_of(state.pending) for state in states]
        spawned = [isinstance(state.pending, Spawn) for state in states]
        for seq, state, item, background in zip(seqs, states, items, spawned):
            runs.begin(seq.row, state, item, background)
        rows = np.array([seq.row for seq in seqs])
        draw = runs.draws(rows)
        merge = None if items[0].merge is None else [item.merge for item in items]
        out = decoder.prefill(seqs, np.stack([item.ids for item in items]), merge, draw)
        for state, background in zip(states, spawned):
            if background:
                self._answer(state, None)
        self._deliver(stage, runs.settle(rows, out, draw))

    def _step(self, stage: str, pauses: Pauses) -> list[tuple[RequestState, Exception]]:
        """One step of the stage's runs under way, paced: the background runs of the requests that
        `pauses` names step only while awaited."""
        runs = self.runs[stage]
        for row, owner in runs.in_background():
            (runs.pause if pauses(owner) else runs.resume)(row)
        rows = runs.stepping()
        if not rows.size:
            return []
        try:
            draw = runs.draws(rows)
            out = self.decoders[stage].step_rows(rows, runs.last[rows], draw)
            self._deliver(stage, runs.settle(rows, out, draw))
            for state, tokens in runs.woken(rows):  # their background run has the tokens they asked for
                self._answer(state, tokens)
        except Exception as err:
            logger.exception("a %s step failed for %d request(s)", stage, rows.size)
            return [(runs.owner[row], err) for row in rows if runs.owner[row] is not None]
        return []

    def _batch_of(self, item: FinePass | Decode) -> int:
        """The rows of every call that runs this item (1: it runs alone, unpadded)."""
        if isinstance(item, FinePass):
            return self.fine_batch
        return self.codec_batch if item.codes.shape[1] <= CODEC_BATCH_FRAMES else 1

    def _one_call_items(self, states: list[RequestState]) -> list[tuple[RequestState, Exception]]:
        """Fine passes of one shape, or decodes of one shape: _batch_of(item) at a time in one call."""
        size = self._batch_of(states[0].pending)
        failures = []
        for at in range(0, len(states), size):
            group = states[at: at + size]
            try:
                self._call(group)
            except Exception as err:
                logger.exception("a %s call failed for %d request(s)", type(group[0].pending).__name__, len(group))
                failures += [(state, err) for state in group]
        return failures

    def _call(self, states: list[RequestState]) -> None:
        """One call of the fine graph or the codec for the items of `states`, padded to the item's
        batch rows: the rows after the given ones repeat the first (their results unused)."""
        items = [state.pending for state in states]
        rows = items + [items[0]] * (self._batch_of(items[0]) - len(items))
        if isinstance(items[0], FinePass):
            feed = {"codes": np.stack([i.codes for i in rows]), "pred_idx": np.array(items[0].pred_idx, np.int64),
                    "temperature": np.array([graph_temperature(i.temperature) for i in rows], np.float32),
                    "uniform": np.stack([as_float32_uniform(i.uniforms) for i in rows])}
            out = self.fine.run(["tokens"], feed)[0]  # (B, W)
        else:
            audio = self.codec.run(None, {"codes": np.stack([i.codes for i in rows])})[0]  # (B, T * 320)
            out = np.ascontiguousarray(audio, dtype=np.float32)
        for i, state in enumerate(states):
            self._answer(state, out[i].copy())

    def _deliver(self, stage: str, finished) -> None:
        """Runs that ended: their tokens to the request that waits for them (a background run's
        stay in the runs for its Await)."""
        for state, tokens, background in finished:
            if not background:
                self._answer(state, tokens)
            elif isinstance(state.pending, Await) and state.pending.stage == stage:
                self._answer(state, RunTokens(tokens, True))

    @staticmethod
    def _answer(state: RequestState, reply) -> None:
        state.reply, state.pending = reply, None


def _call_shape(item: FinePass | Decode) -> tuple:
    """One-call items that may share a call: fine passes of one window length and codebook, decodes of one length."""
    if isinstance(item, FinePass):
        return ("fine", item.codes.shape, item.pred_idx)
    return ("codec", item.codes.shape)


def _run_of(item) -> Generate | None:
    """The decoding run an item starts: a Generate, or the one a Spawn starts in the background."""
    if isinstance(item, Spawn):
        return item.run
    return item if isinstance(item, Generate) else None
