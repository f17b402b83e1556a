"""`bark-onnx bench roofline`: the work of each call type, its bound, and the command at tiny shapes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bark_onnx.benchmarks.call_roofline import STEP_ROWS, Work, causal_work, fine_work, rows_of, table
from bark_onnx.runtime.model.config import GPTConfig


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
