"""Runs the graph work that requests ask for, batching the decoding steps across requests.

    Step(stage)      every stepping row of a stage in one call (rows at their own lengths)
    Prefill(stage)   one call per request
    FinePass         one call per request
    Decode           one call per request

Only the steps are batched: a batched prefill, fine window or convolution may sum in another
order than the same work alone (GPU kernels are picked by shape), and a request's tokens and
audio must not depend on which others ran beside it. The steps stay exact because a row's
arithmetic is its own (on a GPU they always run every row, so their shape never changes; see
decoder.py). Prefills and fine windows are large enough to keep a device busy on their own.

Only the scheduler thread calls this; it is the one place sessions run.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import onnxruntime as ort

from ..stages.work import Decode, FinePass, Prefill, Step
from .decoder import CausalDecoder
from .scheduler import RequestState

logger = logging.getLogger(__name__)


class Executor:
    def __init__(self, decoders: dict[str, CausalDecoder], fine: ort.InferenceSession, codec: ort.InferenceSession):
        self.decoders, self.fine, self.codec = decoders, fine, codec

    def rows_in_use(self) -> int:
        return sum(d.rows_in_use for d in self.decoders.values())

    def release(self, state: RequestState, stage: str) -> None:
        seq = state.rows.pop(stage, None)
        if seq is not None:
            self.decoders[stage].close(seq)

    def release_all(self, state: RequestState) -> None:
        for stage in list(state.rows):
            self.release(state, stage)

    def run(self, states: list[RequestState]) -> list[tuple[RequestState, Exception]]:
        """Run the pending items of `states`; each answered request gets `reply` set and `pending`
        cleared. Returns the (request, error) pairs of calls that failed (their requests only)."""
        groups: dict[tuple, list[RequestState]] = defaultdict(list)
        for state in states:
            item = state.pending
            if isinstance(item, Step):
                groups[("step", item.stage)].append(state)
            elif isinstance(item, (Prefill, FinePass, Decode)):
                groups[(type(item).__name__, id(state))].append(state)
            else:
                raise TypeError(f"unknown work item {type(item).__name__}")
        failures = []
        for key, members in groups.items():
            try:
                replies = self._call(key[0], members)
            except Exception as err:  # an ONNX Runtime failure: the requests of this call fail, others go on
                logger.exception("graph call %s failed for %d request(s)", key, len(members))
                failures += [(state, err) for state in members]
                continue
            for state, reply in zip(members, replies):
                state.reply, state.pending = reply, None
        return failures

    def _call(self, kind: str, states: list[RequestState]) -> list:
        items = [state.pending for state in states]
        if kind == "step":
            stage = items[0].stage
            return list(self.decoders[stage].step([s.rows[stage] for s in states], [it.token for it in items]))
        state, item = states[0], items[0]
        if kind == "Prefill":
            decoder = self.decoders[item.stage]
            if item.stage not in state.rows:
                state.rows[item.stage] = decoder.open()
            merge = None if item.merge is None else [item.merge]
            return list(decoder.prefill([state.rows[item.stage]], item.ids[None], merge))
        if kind == "FinePass":
            feed = {"codes": item.codes[None], "pred_idx": np.array(item.pred_idx, np.int64)}
            return [self.fine.run(None, feed)[0][0]]  # (W, 1024)
        audio = self.codec.run(None, {"codes": item.codes[None]})[0][0]  # (8, T) -> (T * 320,)
        return [np.ascontiguousarray(audio, dtype=np.float32)]
