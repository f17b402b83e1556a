"""Every ONNX Runtime session is made here: providers, threads, optimisation, device.

Providers are CUDA (where it starts), then the CPU, unless the caller names
them (TensorRT only then); the CPU provider is always last, so a graph or op a
GPU provider cannot take still runs. Which providers, and the device of bound
buffers, are decided in providers.py; the GPU providers' options in gpu_options.py.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import BarkOnnxError, ModelDirError
from .gpu_options import session_providers
from .providers import Placement, default_precision, expected_providers, provider_error, resolve_providers

logger = logging.getLogger(__name__)


def default_threads() -> int:
    """Threads for one session: the cores this process may use (ORT's own default overshoots in containers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def machine_precision(providers=None) -> str:
    """The precision to use on this machine with these providers: fp16 where CUDA starts, else int8."""
    return default_precision(make_placement(providers))


def make_placement(providers=None, threads: int | None = None) -> Placement:
    """The providers to ask for (None: CUDA where it starts, then the CPU) and CPU threads per session."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer))
                                or threads < 1):
        raise BarkOnnxError(f"threads must be None (the cores available) or an integer >= 1, got {threads!r:.80}")
    requested = resolve_providers(providers)
    return Placement(requested, int(threads or default_threads()), expected_providers(requested))


_shared_arena = threading.Lock()  # held while the process's one CPU arena is registered
_arena_registered = False


def _memory_options(opts: ort.SessionOptions) -> None:
    """Host memory: one CPU arena for all sessions of the process, no memory patterns
    (measured on bark-small int8, see benchmarks/README.md, "Memory").

    An arena keeps the largest block it ever handed out. With one arena per session
    (ONNX Runtime's default), the four stages' largest calls (a coarse window prefill,
    the fine model's 1024-frame window, the codec's whole segment) stay allocated side
    by side; with one shared arena, only the largest of them does. Memory patterns (a
    block planned per input shape, and the coarse prefills come in many lengths)
    fragment it so that it grows over the first requests; without them it stops
    growing after the first. No arena at all costs time (every large buffer is mapped
    and faulted in again) and saves no more. Weights are not held twice: pre-packed
    int8 weights replace the loaded ones.
    """
    global _arena_registered
    with _shared_arena:
        if not _arena_registered:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(info, None)
            _arena_registered = True
    opts.add_session_config_entry("session.use_env_allocators", "1")
    opts.enable_mem_pattern = False


def create_session(path: Path, placement: Placement, fp16: bool = False,
                   trt_cache: Path | None = None, cuda_graph: bool = False) -> ort.InferenceSession:
    """One inference session for a graph of the model directory."""
    if not path.is_file():
        raise ModelDirError(f"missing graph {path}; the model directory is incomplete, export it again")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = placement.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    # Each session has its own intra-op threads, which spin for a while after a run waiting for more
    # work. A stream alternates between graphs every round (a semantic step, a coarse step, a fine
    # pass): the idle session's spinning threads would take the cores from the busy one (a streamed
    # 13 s segment of bark-small int8 took 45 s instead of 35 s on 2 cores). They spin within a run,
    # where the next op follows at once, and stop when it ends.
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    _memory_options(opts)
    providers = session_providers(path, placement, fp16, trt_cache, cuda_graph)
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types
        gpu_error = provider_error(err, placement)
        if gpu_error is not None:
            raise gpu_error from None
        raise ModelDirError(
            f"cannot load graph {path} ({type(err).__name__}: {str(err).strip()[:300]}); the file is corrupt "
            "or was written by another version: export the model again"
        ) from None
