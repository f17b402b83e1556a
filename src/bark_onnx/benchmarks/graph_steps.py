"""Decoding steps with and without CUDA graphs: one 13 s segment, stage by stage, on one model directory.

    python -m bark_onnx.benchmarks.graph_steps MODEL_DIR --providers cuda,cpu [--rounds 3] [--out FILE]

Loads the model twice, steps through the full graphs (`cuda_graph=False`) and through the step-only
graphs (`cuda_graph=True`, captured once and replayed where CUDA runs), and times each stage of the
benchmark segment (median of the rounds, after a warm-up); the tokens of both are compared.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from bark_onnx.runtime.sessions.providers import provider_names

from .report import print_json
from .workload import SEGMENT, STAGES


def _stages(backend) -> dict[str, tuple[float, object]]:
    """Seconds and output of each stage of the benchmark segment, as `bark-onnx bench` runs them."""
    inputs, out = SEGMENT.inputs(), {}
    for stage in STAGES:
        t = time.perf_counter()
        result = getattr(backend, stage)(SEGMENT, inputs)
        out[stage] = (time.perf_counter() - t, result)
    return out


def measure(model_dir: Path, providers=None, rounds: int = 3) -> dict:
    from .backends import OnnxBackend

    results = {}
    tokens = {}
    for mode in (False, True):
        backend = OnnxBackend(model_dir, providers=providers, cuda_graph=mode)
        tts = backend.tts
        tts.generate("warm up", seed=0, silent=True, max_gen_duration_s=0.5)
        runs = [_stages(backend) for _ in range(rounds)]
        name = "cuda_graph" if mode else "full_graphs"
        results[name] = {stage: float(np.median([r[stage][0] for r in runs])) for stage in runs[0]}
        results[name]["segment_stages_total"] = sum(results[name].values())
        results[name]["providers"] = tts.active_providers()
        results[name]["step_graphs_in_use"] = all(d.fixed is not None for d in tts.decoders.values())
        tokens[name] = runs[0]
        tts.close()
    results["same_tokens"] = {stage: bool(np.array_equal(tokens["full_graphs"][stage][1], tokens["cuda_graph"][stage][1]))
                              for stage in ("semantic", "coarse", "fine")}
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bark_onnx.benchmarks.graph_steps", description=__doc__.split("\n")[0])
    p.add_argument("model_dir")
    p.add_argument("--providers", help="e.g. cuda,cpu")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    results = measure(Path(args.model_dir), provider_names(args.providers), args.rounds)
    print_json(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
