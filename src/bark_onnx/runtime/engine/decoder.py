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

Every call also draws each row's next token in the graph (export/sampling_head.py):
a `Draw` gives each row's temperature, uniform number and column band, and the
call's `Out` holds the token ids (and P(EOS) in the semantic graph); the logits
come to the host only when a caller reads them.

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
import weakref
from dataclasses import dataclass
from typing import Callable

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


@dataclass
class Draw:
    """What each row's draw takes: temperature (n,) float32 (0: greedy), uniform (n,) float32 in
    [0, 1), band (n,) int64: the index of the logits columns it may take (GraphInfo.bands)."""

    temperature: np.ndarray
    uniform: np.ndarray
    band: np.ndarray

    @classmethod
    def greedy(cls, n: int) -> Draw:
        """Argmax over band 0 (what rows riding along, and callers that draw nothing, feed)."""
        return cls(np.zeros(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.int64))


class Out:
    """A call's result for the rows asked for: token ids drawn (n,), P(EOS) (n,) (semantic graphs),
    and the logits (n, V), fetched only when read: from the call's output buffer while it holds
    them, read earlier when the buffer is about to be written again (see _LastOut)."""

    __slots__ = ("token", "eos_p", "_logits", "_fetch", "__weakref__")

    def __init__(self, token: np.ndarray, eos_p: np.ndarray | None, fetch: Callable[[], np.ndarray]):
        self.token, self.eos_p, self._fetch, self._logits = token, eos_p, fetch, None

    @property
    def logits(self) -> np.ndarray:
        self.keep()
        return self._logits

    def keep(self) -> None:
        """Read the logits now, before the buffer they are in is written by a later call."""
        if self._logits is None:
            self._logits = self._fetch()

    @staticmethod
    def join(outs: list[Out]) -> Out:
        eos = None if outs[0].eos_p is None else np.concatenate([o.eos_p for o in outs])
        return Out(np.concatenate([o.token for o in outs]), eos, lambda: np.concatenate([o.logits for o in outs]))


class Sequence:
    """One request's row of a decoder's cache: its filled length and the prompt of its last prefill."""

    __slots__ = ("row", "decoder", "prompt", "pasts")

    def __init__(self, row: int, decoder: CausalDecoder):
        self.row, self.decoder = row, decoder
        self.prompt: np.ndarray | None = None  # ids (and merge ids) of the last prefill
        self.pasts: list[ort.OrtValue] = []  # concat layout only

    @property
    def length(self) -> int:
        return int(self.decoder.length[self.row])


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
        self.has_eos = "eos_p" in {o.name for o in session.get_outputs()}
        self.names = [(f"past_{kind}.{i}", f"present_{kind}.{i}") for i in range(cfg.n_layer)
                      for kind in ("key", "value")]
        self.row_shape = (cfg.n_head, self.max_len, cfg.head_dim)
        self.row_bytes = int(np.prod(self.row_shape)) * np.dtype(self.kv_dtype).itemsize
        self._buffers: list[ort.OrtValue] = []
        if self.inplace:  # untouched pages of a CPU buffer take no memory until a row is used
            self._buffers = [ort.OrtValue.ortvalue_from_shape_and_type((max_rows, *self.row_shape), self.kv_dtype,
                                                                       self.device, 0) for _ in self.names]
        self._bindings: dict[tuple[int, int], _Binding] = {}
        self._open: dict[int, Sequence] = {}
        self.length = np.zeros(max_rows, np.int64)  # each row's filled positions
        self.is_open = np.zeros(max_rows, bool)
        self.fixed = FixedStep(step_session, self) if step_session is not None and self.inplace else None

    # ------------------------------------------------------------ rows

    def open(self) -> Sequence:
        """A sequence on the lowest free row (low rows keep a step's row range short)."""
        free = np.flatnonzero(~self.is_open)
        if not free.size:
            raise RowsFullError(f"all {self.max_rows} cache rows are in use")
        seq = Sequence(int(free[0]), self)
        self._open[seq.row] = seq
        self.is_open[seq.row] = True
        self.length[seq.row] = 0
        return seq

    def close(self, seq: Sequence) -> None:
        if self._open.get(seq.row) is seq:
            del self._open[seq.row]
            self.is_open[seq.row] = False
            self.length[seq.row] = 0
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

    def prefill(self, seqs: list[Sequence], ids: np.ndarray, merge=None, draw: Draw | None = None) -> Out:
        """Prompts (n, S) into the sequences' rows, from position 0; the draw from each last position.

        merge: the semantic graph's second token per position, one array (up to S ids) or None per
        sequence (see merge_ids). draw: None draws greedily. Several sequences run as one call when
        their rows are consecutive, none keeps a prefix and the rows are on the CPU (where a row's
        arithmetic does not depend on the batch); otherwise one call each.
        """
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[0] != len(seqs) or ids.shape[1] == 0:
            raise InputError(f"prompts must have shape ({len(seqs)}, S > 0), got {ids.shape}")
        if ids.shape[1] > self.max_len:
            raise InputError(f"a prompt of {ids.shape[1]} positions exceeds the model's {self.max_len}")
        merge = self.merge_ids(ids.shape[1], [None] * len(seqs) if merge is None else list(merge))
        draw = draw or Draw.greedy(len(seqs))
        keeps = [self.kept_positions(s, ids[i], None if merge is None else merge[i]) for i, s in enumerate(seqs)]
        rows = np.array([s.row for s in seqs])
        consecutive = np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows)))
        # on a GPU kernels are picked by shape: a row's prefill must not depend on the rows beside it
        if self.inplace and not any(keeps) and consecutive and (self.device == "cpu" or len(seqs) == 1):
            out = self._run_inplace(rows, ids, merge, np.zeros(len(seqs), np.int64), draw)
        else:
            out = Out.join([self._run([s], ids[i:i + 1, k:], None if merge is None else merge[i:i + 1, k:], k,
                                      _rows_of(draw, i)) for i, (s, k) in enumerate(zip(seqs, keeps))])
        self.length[rows] = ids.shape[1]
        for i, s in enumerate(seqs):
            s.prompt = ids[i] if merge is None else np.stack([ids[i], merge[i]])
        return out

    def step(self, seqs: list[Sequence], tokens, draw: Draw | None = None) -> Out:
        """One token per sequence (n,); every sequence advances by one."""
        return self.step_rows(np.array([s.row for s in seqs], dtype=np.int64), tokens, draw)

    def step_rows(self, rows: np.ndarray, tokens, draw: Draw | None = None) -> Out:
        """One token for each of the open rows `rows` (n,), in one call where the layout allows."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(len(rows), 1)
        draw = draw or Draw.greedy(len(rows))
        if (self.length[rows] + 1 > self.max_len).any():
            raise InputError(f"a sequence would exceed the model's {self.max_len} positions")
        out = self._fixed_step(rows, tokens, draw) if self.fixed is not None else None
        if out is None and self.inplace:
            out = self._run_inplace(rows, tokens, None, self.length[rows], draw)
        elif out is None:
            out = Out.join([self._run([self._open[int(r)]], tokens[i:i + 1], None, int(self.length[r]),
                                      _rows_of(draw, i)) for i, r in enumerate(rows)])
        self.length[rows] += 1
        return out

    def cache(self, seq: Sequence, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """The filled part of the sequence's keys and values of one layer, (1, nh, length, hs) (for checks)."""
        if self.inplace:
            k, v = (self._buffers[2 * layer + j].numpy()[seq.row: seq.row + 1] for j in (0, 1))
        else:
            k, v = (seq.pasts[2 * layer + j].numpy() for j in (0, 1))
        return k[:, :, : seq.length], v[:, :, : seq.length]

    # ------------------------------------------------------------ internals

    def _fixed_step(self, rows: np.ndarray, tokens: np.ndarray, draw: Draw) -> Out | None:
        """The step through the step-only graph; None (and the full graph from now on) if it fails."""
        try:
            return self.fixed.run(rows, tokens[:, 0], draw)
        except Exception as err:  # e.g. a provider that cannot capture this graph: the usual calls still work
            logger.warning("step-only graph failed (%s); stepping through the full graph from now on", err)
            self.fixed = None
            return None

    def rows_input(self, lo: int, hi: int, rows: np.ndarray, ids: np.ndarray, past: np.ndarray, draw: Draw):
        """The inputs of rows lo..hi-1: token ids (hi - lo, S), past lengths (hi - lo,) and their draw,
        the given rows' own, the others riding along with zeros and a greedy draw at their idle
        position: just past a row's filled part, which its next prefill or step rewrites before
        reading (and which no kept prefix includes); 0 for a free row."""
        n = hi - lo
        all_ids = np.zeros((n, ids.shape[1]), np.int64)
        all_past = np.where(self.is_open[lo:hi], np.minimum(self.length[lo:hi], self.max_len - 1), 0)
        full = Draw.greedy(n)
        at = rows - lo
        all_ids[at], all_past[at] = ids, past
        full.temperature[at], full.uniform[at], full.band[at] = draw.temperature, draw.uniform, draw.band
        return all_ids, all_past, full

    def kept_positions(self, seq: Sequence, ids: np.ndarray, merge: np.ndarray | None) -> int:
        """Positions of the new prompt that the row already holds (a common prefix), leaving one to run."""
        if self._open.get(seq.row) is not seq:
            raise InputError("this sequence was closed; open a new one")
        if not self.inplace or seq.prompt is None or merge is not None or seq.prompt.ndim != 1:
            return 0
        n = min(len(seq.prompt), len(ids) - 1)
        differs = np.flatnonzero(seq.prompt[:n] != ids[:n])
        return int(differs[0]) if differs.size else n

    def _run(self, seqs: list[Sequence], ids: np.ndarray, merge: np.ndarray | None, past: int, draw: Draw) -> Out:
        if self.inplace:
            return self._run_inplace(np.array([s.row for s in seqs]), ids, merge, np.full(len(seqs), past), draw)
        return self._run_concat(seqs[0], ids, merge, draw, fresh=past == 0)

    def _binding(self, lo: int, n: int) -> _Binding:
        """The binding of rows lo..lo+n-1 with their KV buffers and host outputs (made once per range)."""
        key = (lo, n)
        if key not in self._bindings:
            b = _Binding(self.session.io_binding(), n, self.info.logits_size, self.has_eos, self.device)
            shape = [n, *self.row_shape]
            for buf, (past, present) in zip(self._buffers, self.names):
                ptr = buf.data_ptr() + lo * self.row_bytes
                b.io.bind_input(past, self.device, 0, self.kv_dtype, shape, ptr)
                b.io.bind_output(present, self.device, 0, self.kv_dtype, shape, ptr)
            self._bindings[key] = b
        return self._bindings[key]

    def _run_inplace(self, rows: np.ndarray, ids, merge, past, draw: Draw) -> Out:
        lo, hi = int(rows.min()), int(rows.max()) + 1
        if self.device == "cuda" and ids.shape[1] == 1:
            # GPU kernels are picked by shape: steps always run every row, so a row's arithmetic
            # never depends on how many others are stepping (on the CPU that costs, and is not needed)
            lo, hi = 0, self.max_rows
        b = self._binding(lo, hi - lo)
        if hi - lo == len(rows) and (rows == np.arange(lo, hi)).all():
            all_ids, all_merge, all_past, full = ids, merge, np.asarray(past, dtype=np.int64), draw
        else:  # rows between the given ones ride along (see rows_input)
            all_ids, all_past, full = self.rows_input(lo, hi, rows, ids, past, draw)
            all_merge = None
            if merge is not None:
                given = dict(zip(rows.tolist(), merge))
                all_merge = self.merge_ids(ids.shape[1], [given.get(r) for r in range(lo, hi)])
        io = b.io
        io.bind_cpu_input("input_ids", all_ids)
        if self.has_merge:
            io.bind_cpu_input("merge_ids", all_merge if all_merge is not None
                              else self.merge_ids(all_ids.shape[1], [None] * len(all_ids)))
        io.bind_cpu_input("past_length", all_past)
        _bind_draw(io, full)
        b.last.before_call()  # a one-row call may share the binding of an earlier call of its group
        self.session.run_with_iobinding(io)
        at = rows - lo
        return b.last.hand(Out(b.token[at], None if b.eos_p is None else b.eos_p[at],
                               lambda: b.read_logits()[at]))

    def _run_concat(self, seq: Sequence, ids, merge, draw: Draw, fresh: bool) -> Out:
        b = _Binding(self.session.io_binding(), 1, self.info.logits_size, self.has_eos, self.device)
        if fresh:  # a prefill starts from an empty cache
            empty = (1, self.cfg.n_head, 0, self.cfg.head_dim)
            seq.pasts = [ort.OrtValue.ortvalue_from_shape_and_type(empty, self.kv_dtype, self.device, 0)
                         for _ in self.names]
        b.io.bind_cpu_input("input_ids", ids)
        if self.has_merge:
            b.io.bind_cpu_input("merge_ids", merge if merge is not None else self.merge_ids(ids.shape[1], [None]))
        _bind_draw(b.io, draw)
        for value, (past, present) in zip(seq.pasts, self.names):
            b.io.bind_ortvalue_input(past, value)
            b.io.bind_output(present, self.device)
        self.session.run_with_iobinding(b.io)
        seq.pasts = b.io.get_outputs()[b.n_outputs:]  # this call's presents are the next call's pasts
        return Out(b.token.copy(), None if b.eos_p is None else b.eos_p.copy(), b.read_logits)


class _LastOut:
    """The Out of a buffer's last call, held weakly. A call's logits stay in its output buffer only
    until the buffer's next call: `before_call` has an Out that a caller still holds (a group's
    Out.join, which reads its parts after all of them ran) read them first, and one that nobody
    holds costs nothing. So every Out reads its own call's logits, whichever calls came after."""

    def __init__(self):
        self._ref: weakref.ref | None = None

    def before_call(self) -> None:
        out = self._ref() if self._ref is not None else None
        if out is not None:
            out.keep()
        self._ref = None

    def hand(self, out: Out) -> Out:
        self._ref = weakref.ref(out)
        return out


class _Binding:
    """An IO binding whose tokens and P(EOS) land in host arrays, and whose logits stay where the
    session runs until `read_logits` (bound first, in this order). The buffers are the binding's,
    rewritten by each call: run it between `last.before_call()` and `last.hand(out)`."""

    def __init__(self, io: ort.IOBinding, n: int, width: int, has_eos: bool, device: str = "cpu"):
        self.io = io
        self.last = _LastOut()
        self.token = np.zeros(n, np.int64)
        self.eos_p = np.zeros(n, np.float32) if has_eos else None
        if device == "cpu":
            self._host_logits = np.zeros((n, width), np.float32)
            self._logits = ort.OrtValue.ortvalue_from_numpy(self._host_logits)
        else:  # on a GPU, the (n, 10 001) floats of a call cross only when a caller reads them
            self._host_logits = None
            self._logits = ort.OrtValue.ortvalue_from_shape_and_type((n, width), np.float32, device, 0)
        io.bind_ortvalue_output("logits", self._logits)
        outputs = [("token", self.token)] + ([("eos_p", self.eos_p)] if has_eos else [])
        for name, array in outputs:
            io.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(array))
        self.n_outputs = 1 + len(outputs)

    def read_logits(self) -> np.ndarray:
        return self._host_logits if self._host_logits is not None else self._logits.numpy()


def _bind_draw(io: ort.IOBinding, draw: Draw) -> None:
    io.bind_cpu_input("temperature", np.ascontiguousarray(draw.temperature, dtype=np.float32))
    io.bind_cpu_input("uniform", np.ascontiguousarray(draw.uniform, dtype=np.float32))
    io.bind_cpu_input("band", np.ascontiguousarray(draw.band, dtype=np.int64))


def _rows_of(draw: Draw, i: int) -> Draw:
    return Draw(draw.temperature[i:i + 1], draw.uniform[i:i + 1], draw.band[i:i + 1])


class FixedStep:
    """Every row's one-token step through the step-only graph, with every input and output bound
    once at a fixed device address, as a CUDA graph needs to be captured once and replayed.

    All max_rows rows run on each call (the ones not stepping ride along, see rows_input); per
    call, the token ids, past lengths and draws go to the device and the drawn tokens (and
    P(EOS)) come back; the logits stay there unless a caller reads them.
    """

    def __init__(self, session: ort.InferenceSession, decoder: CausalDecoder):
        self.session, self.decoder = session, decoder
        rows, device = decoder.max_rows, decoder.device

        def buffer(shape, dtype):
            return ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, device, 0)

        self.inputs = {"input_ids": buffer((rows, 1), np.int64), "past_length": buffer((rows,), np.int64),
                       "temperature": buffer((rows,), np.float32), "uniform": buffer((rows,), np.float32),
                       "band": buffer((rows,), np.int64)}
        self.outputs = {"logits": buffer((rows, decoder.info.logits_size), np.float32),
                        "token": buffer((rows,), np.int64)}
        if decoder.has_eos:
            self.outputs["eos_p"] = buffer((rows,), np.float32)
        b = self.binding = session.io_binding()
        self.last = _LastOut()
        for name, value in self.outputs.items():
            b.bind_ortvalue_output(name, value)
        for name, value in self.inputs.items():
            b.bind_ortvalue_input(name, value)
        for buf, (past, present) in zip(decoder._buffers, decoder.names):
            b.bind_ortvalue_input(past, buf)
            b.bind_ortvalue_output(present, buf)

    def run(self, rows: np.ndarray, tokens: np.ndarray, draw: Draw) -> Out:
        dec = self.decoder
        ids, past, full = dec.rows_input(0, dec.max_rows, rows, tokens.reshape(-1, 1), dec.length[rows], draw)
        for name, value in (("input_ids", ids), ("past_length", past), ("temperature", full.temperature),
                            ("uniform", full.uniform), ("band", full.band)):
            self.inputs[name].update_inplace(np.ascontiguousarray(value))
        self.last.before_call()
        self.session.run_with_iobinding(self.binding)
        eos = self.outputs.get("eos_p")
        return self.last.hand(Out(self.outputs["token"].numpy()[rows], None if eos is None else eos.numpy()[rows],
                                  lambda: self.outputs["logits"].numpy()[rows]))
