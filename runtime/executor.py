"""Runs the graph work that requests ask for, batched across requests where shapes allow.

    Step(stage)      every stepping row of a stage in one call (rows at their own lengths)
    Prefill(stage)   prompts of equal length on consecutive fresh rows in one call, else one each
    FinePass         windows of equal length and codebook in one call; for each window length,
                     the lowest codebook goes first, so requests that lag catch up and then share calls
    Decode           one call each: a batched convolution sums in another order, and a request's
                     audio must not depend on which others ran beside it

Only the scheduler thread calls this; it is the one place sessions run.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import onnxruntime as ort

from .decoder import CausalDecoder
from .work import Decode, FinePass, Prefill, Step

logger = logging.getLogger(__name__)


class Executor:
    def __init__(self, decoders: dict[str, CausalDecoder], fine: ort.InferenceSession, codec: ort.InferenceSession):
        self.decoders, self.fine, self.codec = decoders, fine, codec

    def rows_in_use(self) -> int:
        return sum(d.rows_in_use for d in self.decoders.values())

    def release(self, job, stage: str) -> None:
        seq = job.seqs.pop(stage, None)
        if seq is not None:
            self.decoders[stage].close(seq)

    def release_all(self, job) -> None:
        for stage in list(job.seqs):
            self.release(job, stage)

    def run(self, jobs: list) -> list[tuple[object, Exception]]:
        """Run the pending items of `jobs`; each answered job gets `reply` set and `pending` cleared.
        Returns the (job, error) pairs of calls that failed (their jobs only)."""
        groups: dict[tuple, list] = defaultdict(list)
        for job in jobs:
            item = job.pending
            if isinstance(item, Step):
                groups[("step", item.stage)].append(job)
            elif isinstance(item, Prefill):
                groups[("prefill", item.stage, len(item.ids))].append(job)
            elif isinstance(item, FinePass):
                groups[("fine", len(item.codes), item.pred_idx)].append(job)
            elif isinstance(item, Decode):
                groups[("decode", id(job))].append(job)
            else:
                raise TypeError(f"unknown work item {type(item).__name__}")
        lowest: dict[int, int] = {}
        for key in groups:
            if key[0] == "fine":
                lowest[key[1]] = min(lowest.get(key[1], key[2]), key[2])
        failures = []
        for key, members in groups.items():
            if key[0] == "fine" and key[2] != lowest[key[1]]:
                continue  # waits for the lagging requests of this window length
            try:
                replies = self._call(key[0], members)
            except Exception as err:  # an ONNX Runtime failure: the requests of this call fail, others go on
                logger.exception("graph call %s failed for %d request(s)", key, len(members))
                failures += [(job, err) for job in members]
                continue
            for job, reply in zip(members, replies):
                job.reply, job.pending = reply, None
        return failures

    def _call(self, kind: str, jobs: list) -> list:
        items = [job.pending for job in jobs]
        if kind == "step":
            decoder = self.decoders[items[0].stage]
            return list(decoder.step([job.seqs[items[0].stage] for job in jobs], [it.token for it in items]))
        if kind == "prefill":
            return list(self._prefill(jobs, items))
        if kind == "fine":
            codes = np.stack([it.codes for it in items])  # (B, W, 8)
            return list(self.fine.run(None, {"codes": codes, "pred_idx": np.array(items[0].pred_idx, np.int64)})[0])
        audio = self.codec.run(None, {"codes": items[0].codes[None]})[0][0]  # (8, T) -> (T * 320,)
        return [np.ascontiguousarray(audio, dtype=np.float32)]

    def _prefill(self, jobs: list, items: list[Prefill]) -> np.ndarray:
        stage = items[0].stage
        decoder = self.decoders[stage]
        for job in jobs:
            if stage not in job.seqs:
                job.seqs[stage] = decoder.open()
        order = sorted(range(len(jobs)), key=lambda i: job_row(jobs[i], stage))
        ids = np.stack([items[i].ids for i in order])
        merge = None
        if decoder.has_merge:
            merge = np.full(ids.shape, decoder.info.merge_none_id, dtype=np.int64)
            for row, i in enumerate(order):
                if items[i].merge is not None:
                    merge[row, : len(items[i].merge)] = items[i].merge
        logits = decoder.prefill([jobs[i].seqs[stage] for i in order], ids, merge)
        out = np.empty_like(logits)
        out[order] = logits
        return out


def job_row(job, stage: str) -> int:
    return job.seqs[stage].row
