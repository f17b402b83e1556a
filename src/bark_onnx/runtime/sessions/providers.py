"""Which execution providers the sessions run on, and where their bound buffers live.

onnxruntime-gpu lists CUDA and TensorRT among its providers even where their
libraries cannot load, and a session that cannot start one silently runs on
the next. So the decision is made twice: before any session exists, from a
probe (one byte allocated on the CUDA device), and once the sessions exist,
from what each of them reports (`session.get_providers()`). Both say why
when a GPU provider asked for was not obtained.

The default list is CUDA (where this build has it), then the CPU. TensorRT
runs only when asked for by name (`providers=["tensorrt", "cuda", "cpu"]`).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import logging
import os
from dataclasses import dataclass, replace

import numpy as np
import onnxruntime as ort

from ..errors import BarkOnnxError

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)
DEFAULT_ORDER = (CUDA, CPU)  # TensorRT never by default: it needs standard-op graphs and builds engines
SHORT_NAMES = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "cpu": CPU}
# The shared library behind each GPU provider, beside onnxruntime's own (onnxruntime/capi/).
PROVIDER_LIBRARIES = {CUDA: "libonnxruntime_providers_cuda.so", TENSORRT: "libonnxruntime_providers_tensorrt.so"}
GPU_HELP = ("check that `nvidia-smi` sees the GPU and that onnxruntime-gpu finds CUDA 13 and cuDNN 9 "
            "(pip install 'bark-onnx[gpu]' brings both; see README, 'GPU')")


def short(provider: str) -> str:
    """'CUDAExecutionProvider' -> 'CUDA', 'TensorrtExecutionProvider' -> 'TensorRT'."""
    return "TensorRT" if provider == TENSORRT else provider.replace("ExecutionProvider", "")


@dataclass(frozen=True)
class Placement:
    """Where sessions run.

    providers: asked for, best first, the CPU last. active: what the sessions
    got once they exist (see `settle_placement`), or what the probe expects
    before; None when nobody checked. `device` is where bound buffers live.
    """

    providers: tuple[str, ...]
    threads: int
    active: tuple[str, ...] | None = None

    @property
    def running(self) -> tuple[str, ...]:
        return self.active if self.active is not None else self.providers

    @property
    def on_gpu(self) -> bool:
        return self.running[0] in GPU_PROVIDERS

    @property
    def device(self) -> str:
        return "cuda" if self.on_gpu else "cpu"


def session_device(session) -> str:
    """The device a session's bound inputs and outputs must live on: 'cuda' or 'cpu'."""
    return "cuda" if session.get_providers()[0] in GPU_PROVIDERS else "cpu"


def provider_names(value) -> tuple[str, ...] | None:
    """Providers as a command line or a config gives them ("cuda,cpu", or a list) -> names; None or
    nothing named: None (the default choice)."""
    if value is None:
        return None
    names = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(n).strip() for n in names if str(n).strip()) or None


def names_a_gpu(names) -> bool:
    """Whether providers given by name ("cuda", "TensorrtExecutionProvider", ...) include a GPU one."""
    return any(SHORT_NAMES.get(str(n).lower(), str(n)) in GPU_PROVIDERS for n in names or ())


def resolve_providers(requested=None) -> tuple[str, ...]:
    """The providers to ask for, best first, always ending with the CPU provider."""
    available = ort.get_available_providers()
    if requested is None:
        chosen = [p for p in DEFAULT_ORDER if p in available]
    else:
        if isinstance(requested, str):
            requested = [requested]
        if not isinstance(requested, (list, tuple)) or not all(isinstance(p, str) for p in requested):
            raise BarkOnnxError(f"providers must be None, a name or a list of names such as ['cuda', 'cpu'], "
                                f"got {requested!r:.80}")
        chosen = []
        for name in requested:
            full = SHORT_NAMES.get(str(name).lower(), str(name))
            if full not in available:
                raise BarkOnnxError(
                    f"execution provider {name!r} is not available in this onnxruntime build "
                    f"(available: {', '.join(available)}); for CUDA or TensorRT install "
                    "bark-onnx[gpu] in place of bark-onnx[cpu] (see README, 'GPU')"
                )
            if full not in chosen:
                chosen.append(full)
    if CPU not in chosen:
        chosen.append(CPU)
    return tuple(chosen)


def preload_cuda() -> str:
    """Load CUDA and cuDNN from the nvidia-* pip packages (onnxruntime-gpu >= 1.21 has
    `preload_dlls`); returns what it printed. Its prints are kept off stdout, which may carry audio."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return ""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            preload()
        except Exception as err:  # a missing folder or a failed load: the probe will say what it means
            print(f"preload_dlls failed: {err}")
    text = printed.getvalue().strip()
    if text:
        logger.debug("onnxruntime.preload_dlls: %s", text)
    return text


def provider_library_error(provider: str) -> str:
    """Why a GPU provider's library does not load (the missing CUDA/cuDNN/TensorRT library), or ''."""
    name = PROVIDER_LIBRARIES.get(provider)
    if name is None:
        return ""
    path = os.path.join(os.path.dirname(ort.__file__), "capi", name)
    if not os.path.isfile(path):
        return f"this onnxruntime has no {name}"
    try:
        ctypes.CDLL(path)
    except OSError as err:
        return str(err)
    return ""


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    logger.warning(message)


@functools.lru_cache(maxsize=1)
def cuda_status() -> tuple[bool, str]:
    """(usable, why not): whether CUDA starts here. Runs once per process."""
    preload_cuda()
    try:
        ort.OrtValue.ortvalue_from_shape_and_type((1,), np.float32, "cuda", 0)
    except Exception as err:  # onnxruntime raises RuntimeError or its own types
        reason = provider_library_error(CUDA) or str(err).strip().splitlines()[-1][:300]
        return False, reason
    return True, ""


def expected_providers(requested: tuple[str, ...]) -> tuple[str, ...]:
    """The requested providers less the GPU ones that cannot start here (with a warning saying why)."""
    if not any(p in GPU_PROVIDERS for p in requested):
        return requested
    usable, reason = cuda_status()
    if usable:
        return requested
    dropped = " and ".join(short(p) for p in requested if p in GPU_PROVIDERS)
    _warn_once(f"{dropped} asked for, but CUDA does not start here ({reason}); the sessions run on the CPU: {GPU_HELP}")
    return tuple(p for p in requested if p not in GPU_PROVIDERS)


def settle_placement(placement: Placement, sessions: dict, precision: str | None = None,
                     kv_cache: str = "inplace") -> Placement:
    """The placement the sessions actually got: a provider counts as active when every session has it.

    Warns, saying why where it can, about each GPU provider a session did not get, and
    (given the graphs' precision) about graphs whose nodes fall back to the CPU.
    """
    got = {stage: tuple(s.get_providers()) for stage, s in sessions.items()}
    for provider in (p for p in placement.running if p in GPU_PROVIDERS):
        without = [stage for stage, providers in got.items() if provider not in providers]
        if without:
            reason = provider_library_error(provider) or "onnxruntime printed the reason on stderr"
            logger.warning("%s was asked for, but the %s session%s run without it (%s); bound buffers stay "
                           "on the host: %s", short(provider), ", ".join(without), "s" * (len(without) > 1),
                           reason, GPU_HELP)
    active = tuple(p for p in placement.providers if all(p in providers for providers in got.values()))
    settled = replace(placement, active=active or (CPU,))
    message = precision_warning(precision, settled, kv_cache) if precision else None
    if message:
        logger.warning(message)
    return settled


def default_precision(placement: Placement) -> str:
    """The graphs to use by default: fp16 where CUDA runs the sessions, int8 on the CPU.

    On the CPU int8 runs a segment in less than half fp32's time from a quarter of its disk, at
    a price measured against fp32 (README, "Speed and size"; benchmarks/README.md)."""
    return "fp16" if placement.on_gpu else "int8"


# What each precision loses on a GPU provider, besides the attention of in-place graphs.
GPU_FALLBACKS = {
    "int8": "DynamicQuantizeMatMul has no CUDA kernel: the GPTs' matrix products run on the CPU",
    "int4": "int4 (MatMulNBits around fp32 activations) is a CPU format here",
}


def precision_warning(precision: str, placement: Placement, kv_cache: str = "inplace") -> str | None:
    """What goes wrong running `precision` graphs where `placement` runs them, and what to export instead."""
    if not placement.on_gpu:
        if precision == "fp16":
            return ("fp16 graphs on the CPU are slow (ONNX Runtime's CPU kernels convert fp16); "
                    "export with --precision fp32 (or int8) for the CPU")
        return None
    if precision == "fp16":
        return None
    parts = [GPU_FALLBACKS.get(precision, "")]
    if kv_cache == "inplace":
        parts.append("ONNX Runtime's CUDA GroupQueryAttention takes fp16/bf16 only, so every attention node runs "
                     "on the CPU and each step copies the layers' KV buffers between host and device")
    if not any(parts):  # fp32 with concatenated caches: all on the GPU, at twice fp16's bytes
        parts = ["they run at about half the speed of fp16 and twice its memory"]
    return (f"{precision} graphs on {short(placement.running[0])}: " + "; ".join(p for p in parts if p)
            + "; export with --precision fp16 for CUDA")


def provider_error(err: Exception, placement: Placement) -> BarkOnnxError | None:
    """A clear error for a session that failed because a GPU provider failed (None for other failures)."""
    text = str(err)
    gpu = [p for p in placement.running if p in GPU_PROVIDERS]
    if not gpu or not any(word in text for word in ("CUDA", "cuDNN", "cudnn", "TensorRT", "Tensorrt", "nvinfer")):
        return None
    reason = next((r for r in map(provider_library_error, gpu) if r), text.strip().splitlines()[-1][:300])
    return BarkOnnxError(f"{' and '.join(map(short, gpu))} failed to start a session ({reason}); {GPU_HELP}, "
                         "or run on the CPU with providers=['cpu'] (--providers cpu)")
