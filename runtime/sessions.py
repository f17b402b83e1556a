"""Every ONNX Runtime session is made here: providers, threads, optimisation, device.

Providers are tried in the order TensorRT, CUDA, CPU among those this
onnxruntime build offers, unless the caller names them. The CPU provider is
always last, so a graph or op a GPU provider cannot take still runs.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from .errors import BarkOnnxError, ModelDirError

logger = logging.getLogger(__name__)

PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
SHORT_NAMES = {"tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider",
               "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


@dataclass(frozen=True)
class Placement:
    """Where sessions run: the provider list and the device that holds bound buffers."""

    providers: tuple[str, ...]
    threads: int

    @property
    def device(self) -> str:
        return "cuda" if self.on_gpu else "cpu"

    @property
    def on_gpu(self) -> bool:
        return self.providers[0] in ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def default_threads() -> int:
    """Threads for one session: the cores this process may use (ORT's own default overshoots in containers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def resolve_providers(requested=None) -> tuple[str, ...]:
    """The providers to use, best first, always ending with the CPU provider."""
    available = ort.get_available_providers()
    if requested is None:
        chosen = [p for p in PREFERRED if p in available]
    else:
        if isinstance(requested, str):
            requested = [requested]
        chosen = []
        for name in requested:
            full = SHORT_NAMES.get(str(name).lower(), str(name))
            if full not in available:
                raise BarkOnnxError(
                    f"execution provider {name!r} is not available in this onnxruntime build "
                    f"(available: {', '.join(available)}); for CUDA or TensorRT install "
                    "onnxruntime-gpu in place of onnxruntime (see README, 'GPU')"
                )
            if full not in chosen:
                chosen.append(full)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return tuple(chosen)


def make_placement(providers=None, threads: int | None = None) -> Placement:
    placement = Placement(resolve_providers(providers), int(threads or default_threads()))
    if placement.threads < 1:
        raise BarkOnnxError(f"threads must be at least 1, got {threads}")
    return placement


def _provider_options(name: str, cache_dir: Path | None, fp16: bool) -> dict:
    if name == "TensorrtExecutionProvider":
        opts = {"trt_fp16_enable": fp16, "trt_engine_cache_enable": cache_dir is not None}
        if cache_dir is not None:
            opts["trt_engine_cache_path"] = str(cache_dir)
            opts["trt_timing_cache_enable"] = True
            opts["trt_timing_cache_path"] = str(cache_dir)
        return opts
    return {}


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
                   trt_cache: Path | None = None) -> ort.InferenceSession:
    """One inference session for a graph of the model directory."""
    if not path.is_file():
        raise ModelDirError(f"missing graph {path}; the model directory is incomplete, export it again")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = placement.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    _memory_options(opts)
    providers = [(p, _provider_options(p, trt_cache, fp16)) for p in placement.providers]
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types
        raise ModelDirError(
            f"cannot load graph {path} ({type(err).__name__}: {str(err).strip()[:300]}); the file is corrupt "
            "or was written by another version: export the model again"
        ) from None
