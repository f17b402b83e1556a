"""Step-by-step runner of a causal graph (semantic or coarse) that owns its KV cache.

`inplace` graphs: one (B, nh, max_len, hs) buffer per layer and per K/V,
allocated once for a batch size on the session's device and bound through IO
binding as both `past_*` and `present_*`; a step writes its row in place and
nothing is copied or reallocated. Starting a new sequence only resets the
filled length.

`concat` graphs: the cache grows by one row per step; presents stay on the
device as OrtValues and are bound as the next step's pasts.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from .config import GPTConfig, GraphInfo
from .errors import InputError
from .sessions import Placement

_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class CausalDecoder:
    def __init__(self, session: ort.InferenceSession, info: GraphInfo, cfg: GPTConfig, kv_layout: str,
                 placement: Placement):
        self.session, self.info, self.cfg = session, info, cfg
        self.inplace = kv_layout == "inplace"
        self.device = placement.device
        self.max_len = cfg.block_size
        types = {i.name: i.type for i in session.get_inputs()}
        self.kv_dtype = _NP_TYPES[types["past_key.0"]]
        self.has_merge = "merge_ids" in types
        self.layers = range(cfg.n_layer)
        self.binding = session.io_binding()
        self._logits = np.zeros((1, info.logits_size), np.float32)
        self._bind_logits(1)  # bound first: get_outputs()[0] is the logits
        self.batch = 0
        self.length = 0
        self.owner: object = None  # who started the cached sequence (see start)
        self._buffers: list[ort.OrtValue] = []

    def _kv_names(self):
        for i in self.layers:
            for kind in ("key", "value"):
                yield f"past_{kind}.{i}", f"present_{kind}.{i}"

    def _bind_logits(self, batch: int) -> None:
        """Logits land in a host array owned here (rebinding a name keeps its place in the outputs)."""
        self._logits = np.zeros((batch, self.info.logits_size), np.float32)
        self.binding.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(self._logits))

    def start(self, batch: int, keep: int = 0, owner: object = None) -> None:
        """Begin a new sequence of `batch` rows (the buffers are reused when the batch size is unchanged).

        keep: with an in-place cache and one row (see can_keep), keep the first `keep`
        positions of the previous sequence (a shared prefix) instead of recomputing them.
        owner: who starts this sequence; only the same owner may keep its prefix, so two
        interleaved generators on one decoder never read each other's cache.
        """
        if keep:
            if not self.can_keep(batch, keep, owner):
                raise InputError(f"cannot keep {keep} cached positions (batch {batch}, cached {self.length})")
            self.length = keep
            return
        self.owner = owner
        shape_len = self.max_len if self.inplace else 0
        if batch != self.batch or not self.inplace:
            shape = (batch, self.cfg.n_head, shape_len, self.cfg.head_dim)
            self._buffers = [
                ort.OrtValue.ortvalue_from_shape_and_type(shape, self.kv_dtype, self.device, 0)
                for _ in self._kv_names()
            ]
            for buf, (past, present) in zip(self._buffers, self._kv_names()):
                self.binding.bind_ortvalue_input(past, buf)
                if self.inplace:
                    self.binding.bind_ortvalue_output(present, buf)
                else:
                    self.binding.bind_output(present, self.device)
            if batch != self.batch:
                self._bind_logits(batch)
            self.batch = batch
        self.length = 0

    def can_keep(self, batch: int, keep: int, owner: object = None) -> bool:
        """Whether start(batch, keep, owner) can reuse a prefix: the same owner started the cached
        sequence, in-place caches and one row only (ONNX Runtime's GroupQueryAttention takes several
        new positions after a past for batch 1 only)."""
        return (owner is not None and owner is self.owner and self.inplace and batch == self.batch == 1
                and 0 < keep <= self.length)

    def forward(self, input_ids: np.ndarray, merge_ids: np.ndarray | None = None) -> np.ndarray:
        """input_ids (B, S) -> logits (B, logits_size) of the last position; the cache advances by S."""
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[0] != self.batch:
            raise InputError(f"input_ids must have shape ({self.batch}, S), got {ids.shape}")
        if self.length + ids.shape[1] > self.max_len:
            raise InputError(f"sequence of {self.length + ids.shape[1]} positions exceeds the model's {self.max_len}")
        b = self.binding
        b.bind_cpu_input("input_ids", ids)
        if self.has_merge:
            if merge_ids is None:
                merge_ids = np.full(ids.shape, self.info.merge_none_id, dtype=np.int64)
            b.bind_cpu_input("merge_ids", np.ascontiguousarray(merge_ids, dtype=np.int64))
        if self.inplace:
            b.bind_cpu_input("past_length", np.array(self.length, dtype=np.int64))
        self.session.run_with_iobinding(b)
        outputs = b.get_outputs()
        if not self.inplace:  # this step's presents are the next step's pasts; fresh outputs next time
            self._buffers = outputs[1:]
            for value, (past, present) in zip(self._buffers, self._kv_names()):
                b.bind_ortvalue_input(past, value)
                b.bind_output(present, self.device)
        self.length += ids.shape[1]
        return self._logits.copy()

    def cache(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """The filled part of layer `layer`'s keys and values, (B, nh, length, hs) (for checks)."""
        k, v = self._buffers[2 * layer], self._buffers[2 * layer + 1]
        return k.numpy()[:, :, : self.length], v.numpy()[:, :, : self.length]
