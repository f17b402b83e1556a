"""One process per backend, so each is timed alone and its peak memory is its own.

torch's OpenMP threads keep spinning after torch work and slow ONNX Runtime
in the same process by up to 2x; a process per backend also gives each its
own peak RSS. The parent sends a stage name, the worker runs it on the fixed
workload and answers with the seconds it took.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
import traceback
from pathlib import Path

from .workload import PRIMER, SEGMENT, STAGES


def _peak_rss_mb() -> float:
    """This process's own peak resident memory.

    Linux's ru_maxrss survives exec: a worker spawned by a parent that held
    many GB (an export in the same run) would report the parent's peak. The
    address space's high-water mark (VmHWM) starts afresh at exec.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux; elsewhere a fallback


def _memory(backend) -> dict:
    gpu_mb, source = backend.gpu_memory()
    return {"peak_rss_mb": _peak_rss_mb(), "gpu_mb": gpu_mb, "gpu_mb_source": source}


def _serve(conn, name: str, paths: dict, threads: int | None, providers=None, torch_device: str = "cpu") -> None:
    try:
        from .backends import make_backend

        t0 = time.perf_counter()
        backend = make_backend(name, paths, threads, providers, torch_device)
        load_s = time.perf_counter() - t0
        for stage in STAGES:  # warm-up: every stage once on a short input
            getattr(backend, stage)(PRIMER, PRIMER.inputs())
        conn.send({"load_s": load_s, "runs_on": backend.runs_on(), **_memory(backend)})
    except Exception:  # reported to the parent, which raises
        conn.send({"error": traceback.format_exc()})
        return
    inputs = SEGMENT.inputs()
    while True:
        stage = conn.recv()
        if stage is None:
            return
        try:
            t0 = time.perf_counter()
            getattr(backend, stage)(SEGMENT, inputs)
            conn.send({"seconds": time.perf_counter() - t0, **_memory(backend)})
        except Exception:
            conn.send({"error": traceback.format_exc()})


class Worker:
    """A backend loaded in its own process."""

    def __init__(self, name: str, paths: dict[str, Path], threads: int | None = None, providers=None,
                 torch_device: str = "cpu"):
        ctx = mp.get_context("spawn")
        self.name = name
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, name, paths, threads, providers, torch_device),
                                   daemon=True)
        self.process.start()
        self.info = self._receive()

    def _receive(self) -> dict:
        reply = self.conn.recv()
        if "error" in reply:
            self.close()
            raise RuntimeError(f"benchmark backend {self.name} failed:\n{reply['error']}")
        return reply

    def run(self, stage: str) -> dict:
        self.conn.send(stage)
        reply = self._receive()
        self.info.update({k: reply[k] for k in ("peak_rss_mb", "gpu_mb", "gpu_mb_source")})
        return reply

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            self.process.join(timeout=30)
            if self.process.is_alive():
                self.process.kill()
