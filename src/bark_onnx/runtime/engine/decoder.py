"""The KV caches of a causal graph (semantic or coarse) and the sequences that own their rows.

`inplace` graphs: one (rows, heads, max_len, head_dim) buffer per layer and per
K/V, allocated once on the session's device. A `Sequence` owns one row; a call
binds the rows it needs (by address) as both `past_*` and `present_*`, and
ONNX Runtime's GroupQueryAttention writes each row's new keys in place at that
row's own `past_length`. So rows of different requests, each at its own length,
step together in one graph call, and nothing is copied or reallocated.

    buffer  row 0 │ seq A: 257 + 40 filled │
            row 1 │ (free)                 │   step([A, C]) binds rows 0..2 (B = 3);
            row 2 │ seq C: 300 filled      │   row 1 rides along on a dummy token

`concat` graphs (standard ops, for TensorRT and other runtimes): each
sequence keeps its own growing cache as device OrtValues; sequences run one
graph call each.

A prefill keeps the positions its prompt shares with the row's previous prompt
(causal attention: a position's keys depend on the tokens up to it alone), so
the coarse windows that repeat their semantic prefix recompute only the rest.

Memory: a CPU buffer's pages become resident only when a row first writes
them, so one request holds only what its own row filled; when a sequence
closes, its row's pages go back to the system (see `release_pages`), so after
a burst of requests the process shrinks back to what the next one needs.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import sys

import numpy as np
import onnxruntime as ort

from ..errors import BarkOnnxError, InputError
from ..model.config import GPTConfig, GraphInfo
from ..sessions.providers import Placement

logger = logging.getLogger(__name__)

_MADV_DONTNEED = 4  # Linux: the pages are dropped; the next touch maps fresh zero pages


def _madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


_madvise_fn = _madvise()


def release_pages(address: int, size: int) -> int:
    """Give the whole pages inside [address, address + size) of host memory back to the
    system; they read as zeros afterwards. Returns the bytes released (0 where not supported)."""
    if _madvise_fn is None:
        return 0
    start = -(-address // mmap.PAGESIZE) * mmap.PAGESIZE
    stop = (address + size) // mmap.PAGESIZE * mmap.PAGESIZE
    if stop <= start or _madvise_fn(start, stop - start, _MADV_DONTNEED) != 0:
        return 0
    return stop - start

_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class Sequence:
    """One request's row of a decoder's cache: how much is filled and with what prompt."""

    __slots__ = ("row", "length", "prompt", "pasts")

    def __init__(self, row: int):
        self.row = row
        self.length = 0
        self.prompt: np.ndarray | None = None  # ids (and merge ids) of the last prefill
        self.pasts: list[ort.OrtValue] = []  # concat layout only


class RowsFullError(BarkOnnxError):
    """Every row of a decoder's cache is taken (the engine admits no more requests than rows)."""


class CausalDecoder:
    def __init__(self, session: ort.InferenceSession, info: GraphInfo, cfg: GPTConfig, kv_layout: str,
                 placement: Placement, max_rows: int = 1, step_session: ort.InferenceSession | None = None):
        self.session, self.info, self.cfg = session, info, cfg
        self.inplace = kv_layout == "inplace"
        self.device = placement.device
        self.max_len = cfg.block_size
        self.max_rows = max_rows
        types = {i.name: i.type for i in session.get_inputs()}
        self.kv_dtype = _NP_TYPES[types["past_key.0"]]
        self.has_merge = "merge_ids" in types
        self.names = [(f"past_{kind}.{i}", f"present_{kind}.{i}") for i in range(cfg.n_layer)
                      for kind in ("key", "value")]
        self.row_shape = (cfg.n_head, self.max_len, cfg.head_dim)
        self.row_bytes = int(np.prod(self.row_shape)) * np.dtype(self.kv_dtype).itemsize
        self._buffers: list[ort.OrtValue] = []
        if self.inplace:  # untouched pages of a CPU buffer take no memory until a row is used
            self._buffers = [ort.OrtValue.ortvalue_from_shape_and_type((max_rows, *self.row_shape), self.kv_dtype,
                                                                       self.device, 0) for _ in self.names]
        self._bindings: dict[tuple[int, int], tuple[ort.IOBinding, np.ndarray]] = {}
        self._open: dict[int, Sequence] = {}
        self.fixed = FixedStep(step_session, self) if step_session is not None and self.inplace else None

    # ------------------------------------------------------------ rows

    def open(self) -> Sequence:
        """A sequence on the lowest free row (low rows keep a step's row range short)."""
        free = [r for r in range(self.max_rows) if r not in self._open]
        if not free:
            raise RowsFullError(f"all {self.max_rows} cache rows are in use")
        seq = Sequence(free[0])
        self._open[seq.row] = seq
        return seq

    def close(self, seq: Sequence) -> None:
        if self._open.get(seq.row) is seq:
            del self._open[seq.row]
            if self.inplace and self.device == "cpu":  # the row's keys and values are not read again
                for buffer in self._buffers:
                    release_pages(buffer.data_ptr() + seq.row * self.row_bytes, self.row_bytes)
        seq.pasts = []

    @property
    def rows_in_use(self) -> int:
        return len(self._open)

    # ------------------------------------------------------------ calls

    def merge_ids(self, n_positions: int, given) -> np.ndarray | None:
        """The semantic graph's merge_ids (rows, S): each row's ids (up to S of them), right-padded with
        the id that merges nothing, which is all a row without its own gets. None for other graphs."""
        if not self.has_merge:
            return None
        out = np.full((len(given), n_positions), self.info.merge_none_id, dtype=np.int64)
        for i, ids in enumerate(given):
            if ids is not None:
                out[i, : len(ids)] = ids
        return out

    def prefill(self, seqs: list[Sequence], ids: np.ndarray, merge=None) -> np.ndarray:
        """Prompts (n, S) into the sequences' rows, from position 0; returns logits (n, V).

        merge: the semantic graph's second token per position, one array (up to S ids) or None per
        sequence (see merge_ids). Several sequences run as one call when their rows are consecutive
        and none keeps a prefix; otherwise one call each.
        """
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[0] != len(seqs) or ids.shape[1] == 0:
            raise InputError(f"prompts must have shape ({len(seqs)}, S > 0), got {ids.shape}")
        if ids.shape[1] > self.max_len:
            raise InputError(f"a prompt of {ids.shape[1]} positions exceeds the model's {self.max_len}")
        merge = self.merge_ids(ids.shape[1], [None] * len(seqs) if merge is None else list(merge))
        keeps = [self.kept_positions(s, ids[i], None if merge is None else merge[i]) for i, s in enumerate(seqs)]
        rows = [s.row for s in seqs]
        if self.inplace and not any(keeps) and rows == list(range(rows[0], rows[0] + len(rows))):
            out = self._run(seqs, ids, merge, [0] * len(seqs))
        else:
            out = np.concatenate([self._run([s], ids[i:i + 1, k:], None if merge is None else merge[i:i + 1, k:], [k])
                                  for i, (s, k) in enumerate(zip(seqs, keeps))])
        for i, s in enumerate(seqs):
            s.length = ids.shape[1]
            s.prompt = ids[i] if merge is None else np.stack([ids[i], merge[i]])
        return out

    def step(self, seqs: list[Sequence], tokens) -> np.ndarray:
        """One token per sequence (n,) -> logits (n, V); every sequence advances by one."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(len(seqs), 1)
        for s in seqs:
            if s.length + 1 > self.max_len:
                raise InputError(f"sequence of {s.length + 1} positions exceeds the model's {self.max_len}")
        out = self._fixed_step(seqs, tokens) if self.fixed is not None else None
        if out is None and self.inplace:
            out = self._run(seqs, tokens, None, [s.length for s in seqs])
        elif out is None:
            out = np.concatenate([self._run([s], tokens[i:i + 1], None, [s.length]) for i, s in enumerate(seqs)])
        for s in seqs:
            s.length += 1
        return out

    def cache(self, seq: Sequence, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """The filled part of the sequence's keys and values of one layer, (1, nh, length, hs) (for checks)."""
        if self.inplace:
            k, v = (self._buffers[2 * layer + j].numpy()[seq.row: seq.row + 1] for j in (0, 1))
        else:
            k, v = (seq.pasts[2 * layer + j].numpy() for j in (0, 1))
        return k[:, :, : seq.length], v[:, :, : seq.length]

    # ------------------------------------------------------------ internals

    def _fixed_step(self, seqs: list[Sequence], tokens: np.ndarray) -> np.ndarray | None:
        """The step through the step-only graph; None (and the full graph from now on) if it fails."""
        try:
            return self.fixed.run(seqs, tokens[:, 0])
        except Exception as err:  # e.g. a provider that cannot capture this graph: the usual calls still work
            logger.warning("step-only graph failed (%s); stepping through the full graph from now on", err)
            self.fixed = None
            return None

    def rows_input(self, lo: int, hi: int, seqs: list[Sequence], ids: np.ndarray, past) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (hi - lo, S) and past lengths (hi - lo,) of rows lo..hi-1: the sequences' own, the
        other rows riding along with zeros at their idle position (see idle_past)."""
        all_ids = np.zeros((hi - lo, ids.shape[1]), np.int64)
        all_past = np.array([self.idle_past(r) for r in range(lo, hi)], dtype=np.int64)
        at = [s.row - lo for s in seqs]
        all_ids[at] = ids
        all_past[at] = past
        return all_ids, all_past

    def kept_positions(self, seq: Sequence, ids: np.ndarray, merge: np.ndarray | None) -> int:
        """Positions of the new prompt that the row already holds (a common prefix), leaving one to run."""
        if self._open.get(seq.row) is not seq:
            raise InputError("this sequence was closed; open a new one")
        if not self.inplace or seq.prompt is None or merge is not None or seq.prompt.ndim != 1:
            return 0
        n = min(len(seq.prompt), len(ids) - 1)
        differs = np.flatnonzero(seq.prompt[:n] != ids[:n])
        return int(differs[0]) if differs.size else n

    def _run(self, seqs: list[Sequence], ids: np.ndarray, merge: np.ndarray | None, past: list[int]) -> np.ndarray:
        if self.inplace:
            return self._run_inplace(seqs, ids, merge, past)
        return self._run_concat(seqs[0], ids, merge, fresh=past[0] == 0)

    def _binding(self, lo: int, n: int) -> tuple[ort.IOBinding, np.ndarray]:
        """The binding of rows lo..lo+n-1 with their KV buffers and a host logits array (made once per range)."""
        key = (lo, n)
        if key not in self._bindings:
            b = self.session.io_binding()
            logits = np.zeros((n, self.info.logits_size), np.float32)
            b.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(logits))  # first: outputs[0]
            shape = [n, *self.row_shape]
            for buf, (past, present) in zip(self._buffers, self.names):
                ptr = buf.data_ptr() + lo * self.row_bytes
                b.bind_input(past, self.device, 0, self.kv_dtype, shape, ptr)
                b.bind_output(present, self.device, 0, self.kv_dtype, shape, ptr)
            self._bindings[key] = (b, logits)
        return self._bindings[key]

    def _run_inplace(self, seqs, ids, merge, past) -> np.ndarray:
        rows = [s.row for s in seqs]
        lo, hi = min(rows), max(rows) + 1
        if self.device == "cuda" and ids.shape[1] == 1:
            # GPU kernels are picked by shape: steps always run every row, so a row's arithmetic
            # never depends on how many others are stepping (on the CPU that costs, and is not needed)
            lo, hi = 0, self.max_rows
        b, logits = self._binding(lo, hi - lo)
        if hi - lo == len(seqs) and rows == list(range(lo, hi)):
            all_ids, all_merge, all_past = ids, merge, np.asarray(past, dtype=np.int64)
        else:  # rows between the stepping ones ride along (see idle_past)
            all_ids, all_past = self.rows_input(lo, hi, seqs, ids, past)
            all_merge = None
            if merge is not None:
                given = dict(zip(rows, merge))
                all_merge = self.merge_ids(ids.shape[1], [given.get(r) for r in range(lo, hi)])
        b.bind_cpu_input("input_ids", all_ids)
        if self.has_merge:
            b.bind_cpu_input("merge_ids", all_merge if all_merge is not None
                             else self.merge_ids(all_ids.shape[1], [None] * len(all_ids)))
        b.bind_cpu_input("past_length", all_past)
        self.session.run_with_iobinding(b)
        return logits[[r - lo for r in rows]].copy()

    def idle_past(self, row: int) -> int:
        """Where a riding-along row writes its dummy position: just past its filled part, which its
        next prefill or step rewrites before reading (and which no kept prefix includes)."""
        seq = self._open.get(row)
        return 0 if seq is None else min(seq.length, self.max_len - 1)

    def _run_concat(self, seq: Sequence, ids, merge, fresh: bool) -> np.ndarray:
        b = self.session.io_binding()
        logits = np.zeros((1, self.info.logits_size), np.float32)
        b.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(logits))
        if fresh:  # a prefill starts from an empty cache
            empty = (1, self.cfg.n_head, 0, self.cfg.head_dim)
            seq.pasts = [ort.OrtValue.ortvalue_from_shape_and_type(empty, self.kv_dtype, self.device, 0)
                         for _ in self.names]
        b.bind_cpu_input("input_ids", ids)
        if self.has_merge:
            b.bind_cpu_input("merge_ids", merge if merge is not None else self.merge_ids(ids.shape[1], [None]))
        for value, (past, present) in zip(seq.pasts, self.names):
            b.bind_ortvalue_input(past, value)
            b.bind_output(present, self.device)
        self.session.run_with_iobinding(b)
        seq.pasts = b.get_outputs()[1:]  # this call's presents are the next call's pasts
        return logits.copy()


class FixedStep:
    """Every row's one-token step through the step-only graph, with every input and output bound
    once at a fixed device address, as a CUDA graph needs to be captured once and replayed.

    All max_rows rows run on each call (the ones not stepping ride along, see idle_past);
    per call, the token ids and past lengths go to the device and the logits come back.
    """

    def __init__(self, session: ort.InferenceSession, decoder: CausalDecoder):
        self.session, self.decoder = session, decoder
        rows, device = decoder.max_rows, decoder.device
        self.ids = ort.OrtValue.ortvalue_from_shape_and_type((rows, 1), np.int64, device, 0)
        self.past = ort.OrtValue.ortvalue_from_shape_and_type((rows,), np.int64, device, 0)
        self.logits = ort.OrtValue.ortvalue_from_shape_and_type((rows, decoder.info.logits_size), np.float32,
                                                                device, 0)
        b = self.binding = session.io_binding()
        b.bind_ortvalue_output("logits", self.logits)
        b.bind_ortvalue_input("input_ids", self.ids)
        b.bind_ortvalue_input("past_length", self.past)
        for buf, (past, present) in zip(decoder._buffers, decoder.names):
            b.bind_ortvalue_input(past, buf)
            b.bind_ortvalue_output(present, buf)

    def run(self, seqs: list[Sequence], tokens: np.ndarray) -> np.ndarray:
        dec = self.decoder
        ids, past = dec.rows_input(0, dec.max_rows, seqs, np.asarray(tokens).reshape(-1, 1), [s.length for s in seqs])
        rows = [s.row for s in seqs]
        self.ids.update_inplace(ids)
        self.past.update_inplace(past)
        self.session.run_with_iobinding(self.binding)
        return self.logits.numpy()[rows]
