"""`bark-onnx bench roofline`: the work of each call type, its bound, and the command at tiny shapes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bark_onnx.benchmarks.call_roofline import STEP_ROWS, rows_of, segment_rows, table
from bark_onnx.benchmarks.roofline import (
    Work, causal_work, estimate, fine_work, rates_as_peaks, segment_calls, voice_coarse_history,
)
from bark_onnx.benchmarks.workload import SEGMENT, Workload
from bark_onnx.runtime.model.config import CodecConfig, GPTConfig
from bark_onnx.runtime.options import CoarseOptions


def _cfg(layers=2, d=64):
    return GPTConfig(block_size=1024, input_vocab_size=129_600, output_vocab_size=10_048, n_layer=layers, n_head=2,
                     n_embd=d)


def test_a_step_reads_the_weights_once_and_each_rows_cache():
    cfg = _cfg()
    block = 2 * 12 * 64 * 64
    one = causal_work(cfg, head_cols=100, rows=1, new=1, past=10, weight_bytes=1.0, kv_bytes=4)
    assert one.weight_macs == block + 64 * 100
    assert one.attention_macs == 2 * 2 * 64 * 1 * (10 + 1)  # layers x (q.k + p.v) x d x 11 keys
    assert one.weight_bytes == block + 64 * 100
    assert one.cache_bytes == 2 * 2 * 11 * 64 * 4
    eight = causal_work(cfg, head_cols=100, rows=8, new=1, past=10, weight_bytes=1.0, kv_bytes=4)
    assert eight.weight_bytes == one.weight_bytes  # shared by the rows
    assert eight.cache_bytes == 8 * one.cache_bytes and eight.weight_macs == 8 * one.weight_macs
    assert eight.gemm_rows == 8


def test_a_prefill_counts_the_causal_half_and_the_head_once():
    cfg = _cfg()
    w = causal_work(cfg, head_cols=100, rows=1, new=4, past=0, weight_bytes=4.0, kv_bytes=4)
    assert w.attention_macs == 2 * 2 * 64 * 4 * (0 + 5 / 2)  # keys 1, 2, 3, 4: 10 = 4 x 2.5
    assert w.weight_macs == 4 * 2 * 12 * 64 * 64 + 64 * 100
    assert w.gemm_rows == 4
    fine = fine_work(cfg, positions=8, head_cols=100, weight_bytes=1.0)
    assert fine.attention_macs == 2 * 2 * 64 * 8 * 8  # bidirectional: every position sees all 8


def test_the_bound_is_the_larger_of_compute_and_memory():
    peaks = {"gemm": {1: 1e10, 8: 8e10, 887: 3e11}, "fp32": 1e11, "read": 1e10}
    memory = Work(weight_macs=1e8, attention_macs=0, weight_bytes=1e8, cache_bytes=1e8, gemm_rows=1)
    assert memory.bound(peaks) == (pytest.approx(0.02), "memory")  # 2e8 B at 1e10 B/s, compute 0.01 s
    compute = Work(weight_macs=3e11, attention_macs=1e11, weight_bytes=1e8, cache_bytes=0, gemm_rows=900)
    assert compute.bound(peaks) == (pytest.approx(2.0), "compute")  # the 887-row peak is the nearest
    rows = rows_of([{"call": "x", "rows": 1, "positions": "900", "seconds": 4.0, "work": compute}], peaks)
    assert rows[0]["of_bound"] == pytest.approx(0.5)
    assert rows[0]["gmac_per_s"] == pytest.approx(100.0)
    assert "| x | 1 | 900 |" in table({"peaks": peaks | {"gemm_kind": "int8"}, "threads": 2, "cpu_flags": "avx2",
                                       "calls": rows})


def _configs():
    return {"semantic": _cfg(), "coarse": _cfg(), "fine": _cfg()}


def _calls(w: Workload, voice: bool, requests: int = 1) -> list:
    return list(segment_calls(_configs(), CodecConfig(), w, "int8", voice, requests))


def test_a_segment_makes_the_calls_of_barks_algorithm():
    w = Workload(semantic_tokens=100)  # 300 coarse tokens: 5 windows of 60, 150 frames
    calls = _calls(w, voice=False)
    kinds = [(stage, kind) for stage, kind, _ in calls]
    assert kinds.count(("semantic", "prefill")) == 1 and kinds.count(("semantic", "step")) == 99
    prefills = [work.gemm_rows for stage, kind, work in calls if (stage, kind) == ("coarse", "prefill")]
    assert w.coarse_tokens == 300 and prefills == [257, 317, 377, 437, 497]  # 256 + infer + the history so far
    assert kinds.count(("coarse", "step")) == 300 - 5  # each window's first token comes from its prefill
    assert kinds.count(("fine", "fine pass")) == 6 and kinds[-1] == ("codec", "codec chunk")
    steps = [work for stage, kind, work in calls if (stage, kind) == ("semantic", "step")]
    assert steps[0].cache_bytes == 2 * 2 * 258 * 64 * 4  # layers x (k, v) x positions x d x fp32
    assert steps[-1].cache_bytes == 2 * 2 * (257 + 99) * 64 * 4


def test_a_voice_fills_the_histories_from_the_first_window():
    assert voice_coarse_history(CoarseOptions()) == 626  # 209 semantic tokens' worth, less Bark's last two
    prefills = [work.gemm_rows for stage, kind, work in _calls(SEGMENT, voice=True) if kind == "prefill"]
    assert prefills[0] == 257 and prefills[1] == 257 + 626 and set(prefills[2:]) == {257 + 630}
    assert len(prefills) == 1 + 33  # the semantic prefill and 33 windows for 1952 coarse tokens
    kinds = [kind for _, kind, _ in _calls(SEGMENT, voice=True)]
    assert kinds.count("fine pass") == 12  # 512 frames of history: 976 frames need two windows
    assert [kind for _, kind, _ in _calls(SEGMENT, voice=False)].count("fine pass") == 6


def test_requests_in_step_share_the_weights_of_each_call():
    one, eight = _calls(Workload(semantic_tokens=20), True), _calls(Workload(semantic_tokens=20), True, requests=8)
    assert len(one) == len(eight)
    for (_, _, a), (_, _, b) in zip(one, eight):
        assert b.weight_bytes == a.weight_bytes and b.cache_bytes == 8 * a.cache_bytes
        assert b.weight_macs == 8 * a.weight_macs and b.attention_macs == 8 * a.attention_macs


def test_a_stage_is_bound_by_the_sum_of_its_calls():
    w = Workload(semantic_tokens=40)
    rates = {"sgemm_flops": 2e11, "stream_bytes": 2e10}
    got = estimate(_configs(), CodecConfig(), w, "int8", rates)
    peaks = rates_as_peaks(rates)
    want = dict.fromkeys(got, 0.0)
    for stage, _, work in segment_calls(_configs(), CodecConfig(), w, "int8"):
        want[stage] += work.bound(peaks)[0]
    assert got == pytest.approx(want) and all(v > 0 for v in got.values())


def test_a_segment_at_the_pace_of_the_timed_calls():
    peaks = {"gemm": {1: 1e10, 8: 8e10, 887: 3e11}, "fp32": 1e11, "read": 1e10}
    config = type("Config", (), {**_configs(), "codec": CodecConfig()})
    w = Workload(semantic_tokens=40)

    def paced(one_row: float, eight_rows: float, requests: int) -> dict:
        # steps at one pace per row count; prefills at the one-row prefill's; fine at its bound; codec 10x
        rows = [{"call": call, "rows": 1, "of_bound": pace} for call, pace in (
            ("semantic step", one_row), ("coarse step", one_row), ("coarse window prefill", one_row),
            ("fine pass", 1.0), ("codec chunk", 0.1))]
        rows += [{"call": call, "rows": 8, "of_bound": eight_rows} for call in ("semantic step", "coarse step")]
        return segment_rows(config, "int8", peaks, rows, 4, 0.0, w, cases=(("v", True, requests),))[0]

    one = paced(0.5, 0.25, requests=1)  # one request: every prefill and step at the one-row pace
    for stage, factor in (("semantic", 2), ("coarse", 2), ("fine", 1), ("codec", 10)):
        assert one["paced_s"][stage] == pytest.approx(factor * one["bound_s"][stage]), stage
    eight = paced(0.25, 0.25, requests=8)  # eight: steps at the 8-row pace, prefills at the one-row pace
    assert eight["paced_s"]["coarse"] == pytest.approx(4 * eight["bound_s"]["coarse"])
    mixed = paced(0.5, 0.25, requests=8)  # the prefills' 2x lies between the steps' 4x and none
    assert 2 * mixed["bound_s"]["coarse"] < mixed["paced_s"]["coarse"] < 4 * mixed["bound_s"]["coarse"]
    assert eight["audio_s"] == pytest.approx(8 * w.audio_seconds) and eight["coarse_tokens"] == w.coarse_tokens
    text = table({"peaks": peaks | {"gemm_kind": "int8"}, "threads": 2, "cpu_flags": "avx2", "calls": [],
                  "segment": [one, eight]})
    assert "| v | 1 | " in text and "| v | 8 | " in text and "A 0.8 s segment (40 semantic tokens, 120 coarse, 60 frames)" in text


@pytest.mark.slow
def test_bench_roofline_times_every_call_type(tmp_path):
    out = tmp_path / "roofline.json"
    proc = subprocess.run([sys.executable, "-m", "bark_onnx.cli", "bench", "roofline", "--size", "tiny",
                           "--precision", "int8", "--rounds", "1", "--cache", str(tmp_path / "cache"), "--out",
                           str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    calls = [(r["call"], r["rows"]) for r in result["calls"]]
    assert calls == [*(("semantic step", n) for n in STEP_ROWS), *(("coarse step", n) for n in STEP_ROWS),
                     ("coarse window prefill", 1), ("fine pass", 1), ("codec chunk", 1)]
    assert all(r["ms"] > 0 and r["bound_ms"] > 0 and r["bound_by"] in ("compute", "memory") for r in result["calls"])
    assert result["precision"] == "int8" and result["peaks"]["gemm_kind"] == "int8"
    assert result["peaks"]["read"] > 0 and all(v > 0 for v in result["peaks"]["gemm"].values())
    assert "| coarse window prefill | 1 | 887 |" in proc.stdout
    assert [(r["case"], r["requests"]) for r in result["segment"]] == [
        ("without a voice", 1), ("with a voice", 1), ("with a voice", 8)]
    assert all(0 < r["bound_s"][s] for r in result["segment"] for s in ("semantic", "coarse", "fine", "codec"))
