"""Per-stage and per-segment speed of each backend, timed by pytest-benchmark.

Each case runs in the backend's own process (see worker.py) on the fixed
13 s workload (workload.py); a warm-up run of every stage precedes timing.
"""

from __future__ import annotations

from .prepare import dir_bytes
from .workload import SEGMENT


def test_speed(benchmark, case, workers, bench_paths, pytestconfig):
    backend, stage = case
    worker = workers.get(backend)
    rounds = pytestconfig.getoption("--bench-segment-rounds" if stage == "segment" else "--bench-rounds")
    work, unit = SEGMENT.units()[stage]
    model = bench_paths.get(backend, bench_paths["checkpoint"])
    benchmark.group = stage
    benchmark.extra_info.update(
        backend=backend, stage=stage, work=work, unit=unit, size=pytestconfig.getoption("--bench-size"),
        load_s=worker.info["load_s"], model_mb=dir_bytes(model) / 1e6,
    )
    benchmark.pedantic(worker.run, args=(stage,), rounds=rounds, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update({k: worker.info[k] for k in ("peak_rss_mb", "gpu_mb", "gpu_mb_source")})
    benchmark.extra_info["runs_on"] = worker.info["runs_on"]
