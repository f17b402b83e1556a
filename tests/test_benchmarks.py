"""The benchmark harness at tiny shapes (the full runs stay out of CI): results, chart, regression check."""

from __future__ import annotations

import json
import statistics
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
    proc = bench("bench", "stages", "--size", "tiny", "--backends", "onnx-fp32,onnx-int8,reference,transformers",
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
    assert set(results["quality"]["int8"]) == {"semantic", "coarse", "fine", "runs_on"}
    assert 0 <= results["quality"]["int8"]["coarse"]["agreement"] <= 1
    assert results["torch_device"] == "cpu"
    assert info["runs_on"] == "CPU" and results["info"]["transformers"]["runs_on"] == "cpu fp32"
    assert info["gpu_mb"] is None and "GPU MB" not in (out / "results.md").read_text()
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
    proc = bench("bench", "compare", str(base / "results.json"), str(slow), "--threshold", "0.5",
                 "--backends", "onnx-fp32")
    assert proc.returncode == 1
    named = [line.split(":")[0].strip() for line in proc.stderr.splitlines()[1:]]
    assert named == ["onnx-fp32 semantic", "onnx-fp32 codec"], proc.stderr
    proc = bench("bench", "compare", str(base / "results.json"), str(base / "results.json"))
    assert proc.returncode == 0 and "no stage slower" in proc.stdout
    raw = json.loads((base / "pytest-benchmark.json").read_text())
    for b in raw["benchmarks"]:
        if b["extra_info"]["stage"] == "codec":
            b["stats"]["median"] *= 2
    slow_raw = tmp_path / "slow-pytest-benchmark.json"
    slow_raw.write_text(json.dumps(raw))
    proc = bench("bench", "compare", str(base / "pytest-benchmark.json"), str(slow_raw), "--threshold", "0.5",
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


def test_a_failed_run_keeps_what_it_measured(baseline):
    root, _ = baseline
    out = root / "partial"
    proc = bench("bench", "stages", "--size", "tiny", "--backends", "onnx-fp32,nonesuch", "--stages", "codec",
                 "--rounds", "1", "--out", str(out), "--cache", str(root / "cache"), "--no-quality")
    assert proc.returncode == 1 and "what did run is in" in proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["partial"] and set(results["backends"]) == {"onnx-fp32"}
    assert "| onnx-fp32 |" in (out / "results.md").read_text()


def test_torch_device_cuda_without_a_gpu_stops_at_once(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = bench("bench", "stages", "--size", "tiny", "--torch-device", "cuda", "--out", str(tmp_path), timeout=120)
    assert proc.returncode == 2 and "torch sees no CUDA device" in proc.stderr
    assert not (tmp_path / "pytest-benchmark.json").exists()


def _case(backend, stage, seconds, **info):
    extra = {"backend": backend, "stage": stage, "work": 1.0, "unit": "s", "size": "tiny", "load_s": 1.0,
             "model_mb": 10.0, "peak_rss_mb": 100.0, **info}
    stats = {"median": seconds, "min": seconds, "max": seconds, "iqr": 0.0, "rounds": 1}
    return {"extra_info": extra, "stats": stats}


def test_gpu_memory_and_devices_in_the_results():
    """Synthetic figures: the table gains 'runs on' and 'GPU MB' columns when a backend ran on a GPU."""
    from bark_onnx.benchmarks.report import summarize, table

    raw = {"benchmarks": [
        _case("onnx-fp16", "segment", 1.0, runs_on="CUDA+CPU", gpu_mb=900.0, gpu_mb_source="nvidia-smi"),
        _case("onnx-fp16", "codec", 0.1, runs_on="CUDA+CPU", gpu_mb=1200.0, gpu_mb_source="nvidia-smi"),
        _case("transformers", "segment", 4.0, runs_on="cuda fp16", gpu_mb=700.0, gpu_mb_source="torch"),
        _case("transformers", "codec", 0.2, runs_on="cuda fp16", gpu_mb=None, gpu_mb_source=None),
    ]}
    results = summarize(raw)
    assert results["info"]["onnx-fp16"]["gpu_mb"] == 1200.0  # the peak over stages
    assert results["info"]["transformers"] == {**results["info"]["transformers"], "gpu_mb": 700.0,
                                               "gpu_mb_source": "torch", "runs_on": "cuda fp16"}
    text = table(results)
    assert "| backend | runs on | codec | segment |" in text and "GPU MB" in text
    assert "| onnx-fp16 | CUDA+CPU | 0.10" in text and "| 1200 |" in text
    assert "onnx-fp16: nvidia-smi" in text and "transformers: torch" in text
    cpu = summarize({"benchmarks": [_case("onnx-fp32", "codec", 0.1)]})
    assert "GPU MB" not in table(cpu) and cpu["info"]["onnx-fp32"]["gpu_mb"] is None


def test_gpu_memory_readings(monkeypatch):
    from bark_onnx.benchmarks import devices

    answers = {"--query-compute-apps=pid,used_memory": ["123, 4000", "456, 1500"], "--query-gpu=memory.used": ["9000"]}
    monkeypatch.setattr(devices, "_smi", lambda *q: answers.get(q[0]))
    assert devices.process_gpu_mb(456) == 1500.0 and devices.process_gpu_mb(789) is None
    memory = devices.OnnxGpuMemory()  # baseline 9000
    answers["--query-gpu=memory.used"] = ["9800"]
    monkeypatch.setattr(devices.os, "getpid", lambda: 789)  # not listed: the device's use less the baseline
    assert memory.read() == (800.0, devices.SMI_DEVICE)
    monkeypatch.setattr(devices.os, "getpid", lambda: 123)
    assert memory.read() == (4000.0, devices.SMI_PROCESS)
    monkeypatch.setattr(devices, "_smi", lambda *q: None)  # no nvidia-smi
    assert devices.OnnxGpuMemory().read() == (None, None)


def test_reference_modules_on_a_device_return_host_float32():
    import torch

    from bark_onnx.benchmarks.devices import OnDevice, torch_device

    assert torch_device("cpu") == (torch.device("cpu"), torch.float32)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="torch sees no CUDA device"):
            torch_device("cuda")
    module = torch.nn.Linear(4, 3)
    wrapped = OnDevice(module, torch.device("cpu"), torch.bfloat16)
    out = wrapped(torch.ones(2, 4))
    assert out.dtype == torch.float32 and out.device.type == "cpu" and module.weight.dtype == torch.bfloat16

    class WithCache(torch.nn.Module):
        def forward(self, x, past_kv=None):
            return x.float() * 2, [(x, x)]

    logits, kv = OnDevice(WithCache(), torch.device("cpu"), torch.float32)(torch.ones(1, 2), past_kv=[(torch.ones(1),)])
    assert logits.dtype == torch.float32 and isinstance(kv, list)


def test_price_of_fp16(checkpoints, model_dirs, tmp_path):
    """fp16 against fp32, teacher-forced: the fields the results carry, on the tiny model."""
    from bark_onnx.benchmarks.quality import measure
    from bark_onnx.export.exporter import export_model

    fp16 = export_model(str(checkpoints["suno-tiny"]), tmp_path / "fp16", precision="fp16", progress=False,
                        report=lambda line: None)
    price = measure(model_dirs["suno-tiny"], fp16, steps=5, providers=["cpu"])
    assert price["runs_on"] == "CPU"
    for stage in ("semantic", "coarse", "fine"):
        assert 0.5 <= price[stage]["agreement"] <= 1 and 0 < price[stage]["max_logit_error"] < 5e-2


def test_reference_loops_run_through_the_device_wrapper(reference_models, checkpoints):
    """The reference loops, written for host tensors, give the same tokens and audio through OnDevice
    (fp32 on the CPU here; fp16 on CUDA under --torch-device cuda)."""
    import torch

    from bark_onnx.benchmarks.devices import OnDevice
    from bark_onnx.export import reference as R
    from bark_onnx.export.tokenizer import tokenizer_from_vocab

    tok = tokenizer_from_vocab(checkpoints["suno-tiny"] / "vocab.txt")
    tokenize = lambda text: tok.encode(text, add_special_tokens=False).ids  # noqa: E731
    models = reference_models["suno-tiny"]
    wrapped = {k: OnDevice(m, torch.device("cpu"), torch.float32) for k, m in models.items()}

    def run(m):  # 1 s of greedy semantic tokens, then every stage
        semantic = R.generate_semantic(m["semantic"], tokenize, "hello there", temp=0, max_gen_duration_s=1.0)
        coarse = R.generate_coarse(m["coarse"], semantic, temp=0)
        fine = R.generate_fine(m["fine"], coarse, temp=0)
        return semantic, coarse, fine, R.decode(m["codec"], fine)

    plain, moved = run(models), run(wrapped)
    for a, b in zip(plain[:3], moved[:3]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(plain[3], moved[3], atol=1e-6)


def test_footprint_reports_disk_per_graph_and_the_runs_own_peak(baseline, tmp_path):
    """bench footprint: MB on disk per graph (the files' own sizes) and the VmHWM of one generation."""
    root, _ = baseline
    out = tmp_path / "footprint.json"
    proc = bench("bench", "footprint", "--size", "tiny", "--precisions", "int8", "--cache", str(root / "cache"),
                 "--generations", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    model_dir = root / "cache" / "tiny" / "onnx-int8"
    for graph in ("semantic", "coarse", "fine", "codec"):
        files = [model_dir / f"{graph}.onnx", model_dir / f"{graph}.onnx.data"]
        assert row["disk_mb"][graph] == pytest.approx(sum(f.stat().st_size for f in files) / 1e6)
    graphs = ("semantic", "coarse", "fine", "codec")
    assert row["disk_mb"]["steps"] == 0  # step-only graphs come with unquantized in-place exports only
    assert row["disk_mb"]["total"] == pytest.approx(sum(row["disk_mb"][g] for g in graphs))
    peaks = row["peak_rss_mb"]
    assert 0 < peaks["load"] <= peaks["semantic"] <= peaks["coarse"] <= peaks["fine"] <= peaks["codec"] < 4000
    assert len(row["later_peaks_mb"]) == 1 and row["later_peaks_mb"][0] >= peaks["codec"]
    assert row["audio_s"] == pytest.approx(13.0, abs=0.05)
    assert "bark-tiny int8: disk" in proc.stdout and "peak RSS" in proc.stdout


def test_a_segment_only_run_prints_no_empty_roofline_table():
    from bark_onnx.benchmarks.report import summarize, table

    results = summarize({"benchmarks": [_case("onnx-fp32", "segment", 40.0), _case("transformers", "segment", 140.0)]})
    results["roofline"] = {"estimates": {"onnx-fp32": {"codec": 0.1}},
                           "rates": {"sgemm_flops": 3e11, "stream_bytes": 3e10}}
    assert "Roofline" not in table(results) and "| onnx-fp32 | 40.00" in table(results)
    results = summarize({"benchmarks": [_case("onnx-fp32", "codec", 0.2), _case("onnx-fp32", "segment", 40.0)]})
    results["roofline"] = {"estimates": {"onnx-fp32": {"codec": 0.1}},
                           "rates": {"sgemm_flops": 3e11, "stream_bytes": 3e10}}
    text = table(results)
    assert "| backend | codec |\n|---|---|\n| onnx-fp32 | 0.20 / 0.10 = 2.00x |" in text


def test_int8_forms_time_both_and_rows_stay_independent_per_row(baseline, tmp_path):
    root, _ = baseline
    out = tmp_path / "int8.json"
    proc = bench("bench", "int8", "--size", "tiny", "--rounds", "1", "--cache", str(root / "cache"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for form in ("per tensor", "per row"):
        assert set(result["median_ms"][form]) == {"prefill b1", "step b1", "prefill b8", "step b8"}
        assert all(ms > 0 for ms in result["median_ms"][form].values())
    assert result["row_drift"]["per row"] == 0.0  # a row's logits alone equal its logits in the batch
    assert "per row / per tensor" in proc.stdout


def test_step_parts_time_each_part_of_a_step(model_dirs):
    from bark_onnx.benchmarks.step_parts import main, measure

    result = measure(model_dirs["suno-tiny"], ["cpu"], max_batch=2, steps=5)
    assert result["providers"] == ["CPUExecutionProvider"] and not result["step_graph_in_use"]
    assert set(result["ms"]) == {"decoder_step", "sample_1024", "sample_10000", "engine_per_semantic_token"}
    assert all(ms > 0 for ms in result["ms"].values()) and result["semantic_tokens"] == 650  # the segment's tokens
    with pytest.raises(SystemExit):
        main([str(model_dirs["suno-tiny"]), "--steps", "0"])


def test_ab_ratios_pair_round_with_round():
    from bark_onnx.benchmarks.ab import summarize

    rows = summarize({"coarse": {"A": [10.0, 20.0, 12.0], "B": [11.0, 18.0, 15.0]}})["coarse"]
    # B / A per round: 1.1, 0.9, 1.25; the ratio of the medians (15 / 12) would say 1.25
    assert rows["ratio_median"] == pytest.approx(1.1) and rows["ratio_min"] == pytest.approx(0.9)
    assert rows["ratio_max"] == pytest.approx(1.25)
    assert (rows["A_median"], rows["B_median"], rows["A_min"], rows["B_max"]) == (12.0, 15.0, 10.0, 18.0)


def test_ab_times_two_model_directories_in_turns(baseline, tmp_path):
    root, _ = baseline
    a, b = root / "cache" / "tiny" / "onnx-fp32", root / "cache" / "tiny" / "onnx-int8"
    out = tmp_path / "ab.json"
    proc = bench("bench", "ab", str(a), str(b), "--stages", "fine,codec,segment", "--rounds", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["stages"]) == {"fine", "codec", "segment"} and result["rounds"] == 2
    for stage, seconds in result["seconds"].items():
        assert len(seconds["A"]) == len(seconds["B"]) == 2
        ratio = np.median(np.array(seconds["B"]) / np.array(seconds["A"]))
        assert result["stages"][stage]["ratio_median"] == pytest.approx(ratio)
    assert "B / A" in proc.stdout and "round 2/2" in proc.stdout
    bad = bench("bench", "ab", str(a), str(b), "--stages", "coarse,warp")
    assert bad.returncode == 2 and "--stages takes some of" in bad.stderr
    missing = bench("bench", "ab", str(a), str(tmp_path / "nowhere"), "--stages", "codec", "--rounds", "1")
    assert missing.returncode != 0 and "Traceback" not in missing.stderr


def test_graph_steps_time_both_step_paths_and_compare_their_tokens(model_dirs):
    from bark_onnx.benchmarks.graph_steps import measure

    result = measure(model_dirs["suno-tiny"], ["cpu"], rounds=1)
    for mode in ("full_graphs", "cuda_graph"):
        assert {"semantic", "coarse", "fine", "codec"} <= set(result[mode]) and result[mode]["semantic"] > 0
    assert not result["full_graphs"]["step_graphs_in_use"]
    assert result["same_tokens"] == {"semantic": True, "coarse": True, "fine": True}


def test_host_cost_per_row_and_token(baseline, tmp_path):
    """bench host: microseconds per row and token at each level, both draw places, the first request's
    tokens the same alone and among others, and the long-run count of graph/float64 differences."""
    root, _ = baseline
    out = tmp_path / "host.json"
    proc = bench("bench", "host", "--levels", "1,3", "--tokens", "12", "--rounds", "2", "--cache", str(root / "cache"),
                 "--edges", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for where in ("graph", "host"):
        for n in ("1", "3"):
            row = result["levels"][where][n]
            assert len(row["rounds"]) == 2 and row["us_per_row_token"] == statistics.median(row["rounds"])
            assert (row["min"], row["max"]) == (min(row["rounds"]), max(row["rounds"])) and row["min"] > 0
    assert result["same_tokens_alone_and_together"] is True and result["cpu_flags"]
    assert 0.9 <= result["graph_vs_host_token_agreement"] <= 1.0
    edges = result["edges"]
    assert edges["draws"] == 16 * 640 and 0 <= edges["differ"] <= edges["draws"] * 0.01
    assert "us per row and token" in proc.stdout
    bad = bench("bench", "host", "--levels", "0", "--cache", str(root / "cache"))
    assert bad.returncode == 2 and "--levels" in bad.stderr
