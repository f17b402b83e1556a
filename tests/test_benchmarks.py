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


def test_compare_fails_on_a_slowed_run(baseline):
    root, base = baseline
    slow = root / "slow"
    proc = bench("bench", "--size", "tiny", "--backends", "onnx-fp32", "--stages", "semantic,codec",
                 "--rounds", "1", "--out", str(slow), "--cache", str(root / "cache"), "--slowdown", "3",
                 "--no-quality")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = bench("bench-compare", str(base / "results.json"), str(slow / "results.json"), "--threshold", "0.5")
    assert proc.returncode == 1
    assert "onnx-fp32 semantic" in proc.stderr and "onnx-fp32 codec" in proc.stderr
    proc = bench("bench-compare", str(base / "results.json"), str(base / "results.json"))
    assert proc.returncode == 0 and "no stage slower" in proc.stdout
    # pytest-benchmark's own JSON is accepted too
    proc = bench("bench-compare", str(base / "pytest-benchmark.json"), str(slow / "pytest-benchmark.json"),
                 "--threshold", "0.5", "--backends", "onnx-fp32")
    assert proc.returncode == 1


def test_peak_rss_is_the_workers_own():
    """A worker's peak memory is its own, not that of the (large) process that spawned it."""
    import multiprocessing as mp

    from bark_onnx.benchmarks.worker import _peak_rss_mb

    fat = np.ones(600 * 2**20 // 8)  # 600 MB resident in this process
    with mp.get_context("spawn").Pool(1) as pool:
        child = pool.apply(_peak_rss_mb)
    assert fat.sum() > 0 and _peak_rss_mb() > 600
    assert 0 < child < 400


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


def test_footprint_reports_disk_per_graph_and_the_runs_own_peak(baseline, tmp_path):
    """bench-footprint: MB on disk per graph (the files' own sizes) and the VmHWM of one generation."""
    root, _ = baseline
    out = tmp_path / "footprint.json"
    proc = bench("bench-footprint", "--size", "tiny", "--precisions", "int8", "--cache", str(root / "cache"),
                 "--generations", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    model_dir = root / "cache" / "tiny" / "onnx-int8"
    for graph in ("semantic", "coarse", "fine", "codec"):
        files = [model_dir / f"{graph}.onnx", model_dir / f"{graph}.onnx.data"]
        assert row["disk_mb"][graph] == pytest.approx(sum(f.stat().st_size for f in files) / 1e6)
    graphs = ("semantic", "coarse", "fine", "codec")
    assert row["disk_mb"]["total"] == pytest.approx(sum(row["disk_mb"][g] for g in graphs))
    peaks = row["peak_rss_mb"]
    assert 0 < peaks["load"] <= peaks["semantic"] <= peaks["coarse"] <= peaks["fine"] <= peaks["codec"] < 4000
    assert len(row["later_peaks_mb"]) == 1 and row["later_peaks_mb"][0] >= peaks["codec"]
    assert row["audio_s"] == pytest.approx(13.0, abs=0.05)
    assert "bark-tiny int8: disk" in proc.stdout and "peak RSS" in proc.stdout
