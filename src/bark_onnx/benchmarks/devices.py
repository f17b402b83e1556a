"""Where the torch backends run (CPU in fp32, CUDA in fp16) and how much GPU memory each backend holds.

GPU memory is measured two ways, and results say which:
- torch backends: `torch.cuda.max_memory_allocated()`, the peak of torch's
  tensors (its caching allocator's reserve and the CUDA context not counted);
- ONNX Runtime: `nvidia-smi`'s used memory of this process (arena, bound
  buffers and the CUDA context: ONNX Runtime's arena never gives memory back,
  so what it holds after a stage is its peak so far). Where nvidia-smi does not
  list processes (some containers), the device's used memory less what was
  used before the backend loaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess

SMI_PROCESS = "nvidia-smi process used_memory"
SMI_DEVICE = "nvidia-smi device memory.used, less the baseline"
TORCH_PEAK = "torch.cuda.max_memory_allocated"


def _smi(*query: str) -> list[str] | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", *query, "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines() if out.returncode == 0 else None


def process_gpu_mb(pid: int) -> float | None:
    """This process's used GPU memory as nvidia-smi reports it (MiB), or None where it is not listed."""
    for line in _smi("--query-compute-apps=pid,used_memory") or []:
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 2 and fields[0] == str(pid) and fields[1].isdigit():
            return float(fields[1])
    return None


def device_used_mb() -> float | None:
    lines = _smi("--query-gpu=memory.used", "--id=0")
    try:
        return float(lines[0]) if lines else None
    except ValueError:
        return None


class OnnxGpuMemory:
    """GPU memory of an ONNX Runtime backend, in MiB (see the module's note)."""

    def __init__(self):
        self.baseline = device_used_mb()  # before the backend loads anything

    def read(self) -> tuple[float | None, str | None]:
        mb = process_gpu_mb(os.getpid())
        if mb is not None:
            return mb, SMI_PROCESS
        used = device_used_mb()
        if used is not None and self.baseline is not None:
            return used - self.baseline, SMI_DEVICE
        return None, None


def torch_device(name: str):
    """(torch.device, dtype) for the torch backends: fp16 on CUDA, fp32 on the CPU."""
    import torch

    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--torch-device cuda: torch sees no CUDA device (torch.cuda.is_available() is False)")
        return torch.device("cuda"), torch.float16
    if name != "cpu":
        raise ValueError(f"torch device must be 'cpu' or 'cuda', got {name!r}")
    return torch.device("cpu"), torch.float32


def torch_gpu_mb(device) -> tuple[float | None, str | None]:
    import torch

    if device.type != "cuda":
        return None, None
    return torch.cuda.max_memory_allocated(device) / 2**20, TORCH_PEAK


def synchronize(device) -> None:
    """Wait for queued GPU work, so a stage's time includes it."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


class OnDevice:
    """A reference module run on `device` in `dtype` by loops written for CPU tensors.

    Tensor arguments move to the device (floating ones in `dtype`); a KV cache passed back stays there;
    logits and audio come back to the host as float32, where the reference
    loops sample (one small copy per step, as Bark's own loop syncs per step).
    """

    def __init__(self, module, device, dtype):
        self.module = module.to(device=device, dtype=dtype)
        self.device, self.dtype = device, dtype

    def _to(self, x):
        import torch

        if isinstance(x, torch.Tensor):  # token ids keep their integer type
            return x.to(self.device, self.dtype if x.is_floating_point() else x.dtype)
        if isinstance(x, (list, tuple)):
            return type(x)(self._to(v) for v in x)
        return x

    def __call__(self, *args, **kwargs):
        out = self.module(*self._to(args), **{k: self._to(v) for k, v in kwargs.items()})
        if isinstance(out, tuple):  # (logits, kv): the cache stays on the device
            return (out[0].float().cpu(), *out[1:])
        return out.float().cpu()
