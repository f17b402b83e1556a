"""What a model costs on disk and in memory: `bark-onnx bench footprint`.

- Disk: the bytes of each graph with its external data, per graph and in all
  (MB = 10^6 bytes).
- Memory: one generation of the benchmark's 13 s segment (650 semantic tokens,
  EOS off, see workload.py) in a fresh process; its own peak resident memory
  (VmHWM, see worker.py) after loading and after each stage. The process
  imports numpy and ONNX Runtime only, as a service would.

    bark-onnx bench footprint --size small --precisions fp32,int8 [--generations 4]

With --generations N, the process runs the segment N times and reports its peak
after each: memory that grows from one request to the next shows there.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import traceback
from pathlib import Path

GRAPHS = ("semantic", "coarse", "fine", "codec")
MB = 1e6


def disk_mb(model_dir: Path) -> dict[str, float]:
    """MB on disk per graph (the .onnx file and its .data) and in all; 'steps' is the step-only
    graphs of a GPU-ready export (their weights are those of the full graphs' data files)."""
    from bark_onnx.runtime.model.config import ModelConfig

    config = ModelConfig.load(model_dir)

    def size(info) -> float:
        graph = Path(model_dir) / info.file
        data = graph.with_name(graph.name + ".data")
        return (graph.stat().st_size + (data.stat().st_size if data.is_file() else 0)) / MB

    sizes = {name: size(config.graphs[name]) for name in GRAPHS}
    sizes["steps"] = sum(size(info) for info in config.step_graphs.values())
    sizes["total"] = sum(sizes.values())
    return sizes


def _generate(conn, model_dir: str, threads: int | None, generations: int) -> None:
    """In the child: load, run the segment stage by stage, report VmHWM after each step;
    then the whole segment again `generations - 1` times, VmHWM after each."""
    try:
        from .backends import OnnxBackend
        from .worker import _peak_rss_mb
        from .workload import SEGMENT

        peaks = {}
        backend = OnnxBackend(Path(model_dir), threads)
        peaks["load"] = _peak_rss_mb()
        chained = {"semantic": backend.semantic(SEGMENT, None)}
        peaks["semantic"] = _peak_rss_mb()
        chained["coarse"] = backend.coarse(SEGMENT, chained)
        peaks["coarse"] = _peak_rss_mb()
        chained["fine"] = backend.fine(SEGMENT, chained)
        peaks["fine"] = _peak_rss_mb()
        audio = backend.codec(SEGMENT, chained)
        peaks["codec"] = _peak_rss_mb()
        later = []
        for _ in range(generations - 1):  # does memory grow from one request to the next?
            backend.segment(SEGMENT, None)
            later.append(_peak_rss_mb())
        conn.send({"peak_rss_mb": peaks, "later_peaks_mb": later, "audio_s": len(audio) / backend.tts.sample_rate})
    except Exception:  # reported to the parent, which raises
        conn.send({"error": traceback.format_exc()})


def peak_rss(model_dir: Path, threads: int | None = None, generations: int = 1) -> dict:
    """Generations of the segment in a fresh (spawned) process:
    {'peak_rss_mb': {step: MB} of the first, 'later_peaks_mb': [MB after each later one], 'audio_s'}."""
    ctx = mp.get_context("spawn")
    conn, child = ctx.Pipe()
    process = ctx.Process(target=_generate, args=(child, str(model_dir), threads, generations), daemon=True)
    process.start()
    child.close()  # the child holds the only other end: its death ends the wait below
    try:
        reply = conn.recv()
    except EOFError:  # the process died (killed for memory, say) before it could answer
        process.join(timeout=60)
        reply = {"error": f"the process ended without a reply (exit code {process.exitcode})"}
    finally:
        process.join(timeout=60)
        if process.is_alive():
            process.kill()
    if "error" in reply:
        raise RuntimeError(f"the footprint run on {model_dir} failed:\n{reply['error']}")
    return reply


def run(size: str, precisions: list[str], root: Path | None = None, threads: int | None = None,
        generations: int = 1, out=sys.stdout) -> list[dict]:
    """Export (or reuse the bench's cached export) per precision, then measure it."""
    from .prepare import prepare

    from .report import cpu_flags

    paths = prepare(size, precisions, root)
    print(f"CPU flags: {cpu_flags()}", file=out)
    rows = []
    for precision in precisions:
        model_dir = paths[f"onnx-{precision}"]
        disk = disk_mb(model_dir)
        memory = peak_rss(model_dir, threads, generations)
        rows.append({"size": size, "precision": precision, "cpu_flags": cpu_flags(), "disk_mb": disk, **memory})
        peaks = memory["peak_rss_mb"]
        print(f"bark-{size} {precision}: disk {disk['total']:.1f} MB ("
              + ", ".join(f"{g} {disk[g]:.1f}" for g in GRAPHS) + f"); peak RSS {peaks['codec']:.0f} MB "
              f"(after load {peaks['load']:.0f}, " + ", ".join(f"{s} {peaks[s]:.0f}" for s in GRAPHS) + ")"
              + "".join(f"; after generation {i + 2}: {mb:.0f}" for i, mb in enumerate(memory["later_peaks_mb"])),
              file=out, flush=True)
    return rows
