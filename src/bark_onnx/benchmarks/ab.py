"""Two model directories in one process, stage by stage, in alternating rounds.

On a shared machine timings drift by 10-20 % over minutes, so two `bark-onnx
bench` runs one after the other compare the drift as much as the models. Here
both models are loaded side by side, and each round times a stage on one and
then on the other (the order flips every round), so both see the same machine.
Per stage: each model's median and range, and the median of the per-round
ratios B / A, the figure to judge a change by. The work is `bench`'s fixed
13 s segment (benchmarks/workload.py).

    bark-onnx bench ab before/onnx-int8 after/onnx-int8 --stages semantic,coarse --rounds 6
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

STAGES = ("semantic", "coarse", "fine", "codec", "segment")


def summarize(times: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    """{stage: {"A": [s, ...], "B": [...]}} (round i of A paired with round i of B) ->
    medians, ranges and the median, min and max of the paired ratios B / A."""
    rows = {}
    for stage, t in times.items():
        a, b = np.asarray(t["A"], float), np.asarray(t["B"], float)
        ratio = b / a
        rows[stage] = {"A_median": float(np.median(a)), "A_min": float(a.min()), "A_max": float(a.max()),
                       "B_median": float(np.median(b)), "B_min": float(b.min()), "B_max": float(b.max()),
                       "ratio_median": float(np.median(ratio)), "ratio_min": float(ratio.min()),
                       "ratio_max": float(ratio.max())}
    return rows


def run(a: Path, b: Path, stages: list[str], rounds: int, threads: int | None = None, providers=None,
        out=sys.stdout) -> dict:
    from .backends import OnnxBackend
    from .report import cpu_flags
    from .workload import PRIMER, SEGMENT

    models = {"A": OnnxBackend(a, threads, providers), "B": OnnxBackend(b, threads, providers)}
    inputs, primer = SEGMENT.inputs(), PRIMER.inputs()
    for model in models.values():  # warm-up: every stage once on short inputs
        for stage in stages:
            getattr(model, stage)(PRIMER, primer)
    times = {stage: {"A": [], "B": []} for stage in stages}
    for r in range(rounds):
        order = ("A", "B") if r % 2 == 0 else ("B", "A")
        for stage in stages:
            for key in order:
                start = time.perf_counter()
                getattr(models[key], stage)(SEGMENT, inputs)
                times[stage][key].append(time.perf_counter() - start)
        print(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{s} {times[s]['A'][-1]:.2f} / {times[s]['B'][-1]:.2f} s" for s in stages), file=out, flush=True)
    rows = summarize(times)
    result = {"A": str(a), "B": str(b), "rounds": rounds, "cpu_flags": cpu_flags(),
              "runs_on": {k: m.runs_on() for k, m in models.items()}, "stages": rows, "seconds": times}
    print(f"\nA = {a}\nB = {b}\n{rounds} alternating rounds, CPU flags {result['cpu_flags']}; seconds, median (range)",
          file=out)
    print(f"{'stage':10s}{'A':>22s}{'B':>22s}{'B / A, median of rounds (range)':>36s}", file=out)
    for stage, x in rows.items():
        print(f"{stage:10s}{_cell(x, 'A'):>22s}{_cell(x, 'B'):>22s}"
              f"{x['ratio_median']:>17.3f} ({x['ratio_min']:.3f}-{x['ratio_max']:.3f})", file=out, flush=True)
    return result


def _cell(x: dict, key: str) -> str:
    return f"{x[key + '_median']:.2f} ({x[key + '_min']:.2f}-{x[key + '_max']:.2f})"
