"""The benchmark harness at tiny shapes (the full runs stay out of CI): results, chart, regression check."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest


def bench(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "bark_onnx.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    out = root / "base"
    proc = bench("bench", "--size", "tiny", "--backends", "onnx-fp32,onnx-int8,reference,transformers",
                 "--stages", "semantic,coarse,codec,segment,first_audio,semantic_b1,semantic_b8",
                 "--rounds", "1", "--segment-rounds", "1", "--out", str(out), "--cache", str(root / "cache"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, out


@pytest.mark.slow
def test_results_table_chart_and_json(baseline):
    _, out = baseline
    results = json.loads((out / "results.json").read_text())
    assert set(results["backends"]) == {"onnx-fp32", "onnx-int8", "reference", "transformers"}
    fp32 = results["backends"]["onnx-fp32"]
    assert {"semantic", "coarse", "codec", "segment", "first_audio", "semantic_b8"} <= set(fp32)
    assert "first_audio" not in results["backends"]["transformers"]
    assert fp32["semantic"]["work"] == 650 and fp32["coarse"]["work"] == 1952
    assert results["ratios"]["transformers"]["transformers"]["segment"] == 1.0
    assert 0 < results["real_time_factor"]["onnx-fp32"]
    info = results["info"]["onnx-fp32"]
    assert info["peak_rss_mb"] > 0 and info["model_mb"] > 0 and info["load_s"] > 0
    assert results["roofline"]["estimates"]["onnx-fp32"]["coarse"] > 0
    assert set(results["quality"]["int8"]) == {"semantic", "coarse", "fine"}
    assert 0 <= results["quality"]["int8"]["coarse"]["agreement"] <= 1
    table = (out / "results.md").read_text()
    assert "vs transformers" in table and "Roofline" in table and "first audio" in table
    assert (out / "chart.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "pytest-benchmark.json").is_file()


def _slowed(results: dict, factors: dict[str, float]) -> dict:
    """A copy of a results.json whose stage medians are scaled: a run slowed by a known amount."""
    out = json.loads(json.dumps(results))
    for stats in out["backends"].values():
        for stage, factor in factors.items():
            if stage in stats:
                stats[stage]["median_s"] *= factor
    return out


@pytest.mark.slow
def test_compare_fails_on_a_slowed_run(baseline, tmp_path):
    """The regression check on figures of known slowdowns (no timing involved): only the stages
    slowed past the threshold are named, and both JSON formats are read."""
    _, base = baseline
    results = json.loads((base / "results.json").read_text())
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps(_slowed(results, {"semantic": 1.6, "codec": 1.6, "coarse": 1.4})))
    proc = bench("bench-compare", str(base / "results.json"), str(slow), "--threshold", "0.5",
                 "--backends", "onnx-fp32")
    assert proc.returncode == 1
    named = [line.split(":")[0].strip() for line in proc.stderr.splitlines()[1:]]
    assert named == ["onnx-fp32 semantic", "onnx-fp32 codec"], proc.stderr
    proc = bench("bench-compare", str(base / "results.json"), str(base / "results.json"))
    assert proc.returncode == 0 and "no stage slower" in proc.stdout
    raw = json.loads((base / "pytest-benchmark.json").read_text())
    for b in raw["benchmarks"]:
        if b["extra_info"]["stage"] == "codec":
            b["stats"]["median"] *= 2
    slow_raw = tmp_path / "slow-pytest-benchmark.json"
    slow_raw.write_text(json.dumps(raw))
    proc = bench("bench-compare", str(base / "pytest-benchmark.json"), str(slow_raw), "--threshold", "0.5",
                 "--backends", "onnx-fp32")
    assert proc.returncode == 1 and "onnx-fp32 codec" in proc.stderr


def test_peak_rss_is_the_workers_own():
    """A worker's peak memory is its own, not that of the (large) process that spawned it."""
    import multiprocessing as mp

    from bark_onnx.benchmarks.worker import _peak_rss_mb

    fat = np.ones(600 * 2**20 // 8)  # 600 MB resident in this process
    with mp.get_context("spawn").Pool(1) as pool:
        child = pool.apply(_peak_rss_mb)
    assert fat.sum() > 0 and _peak_rss_mb() > 600
    assert 0 < child < 400


@pytest.mark.slow
def test_bench_exports_again_when_the_exporter_changed(baseline, monkeypatch):
    """A cached export is reused while the export code is unchanged, and made again when it is not."""
    from bark_onnx.benchmarks import prepare as P

    cache = baseline[0] / "cache"
    model_dir = cache / "tiny" / "onnx-fp32"
    marker = model_dir / P.FINGERPRINT_FILE
    assert marker.read_text().strip() == P.export_fingerprint()
    made = (model_dir / "config.json").stat().st_mtime_ns
    P.prepare("tiny", ["fp32"], cache, progress=False)
    assert (model_dir / "config.json").stat().st_mtime_ns == made
    monkeypatch.setattr(P, "export_fingerprint", lambda: "other-code")
    P.prepare("tiny", ["fp32"], cache, progress=False)
    assert marker.read_text().strip() == "other-code"
    assert (model_dir / "config.json").stat().st_mtime_ns != made
