"""`bark-onnx bench serve` at tiny counts: it starts a server, loads it at 1x and 2x its max batch,
soaks it, reads its memory, stops it, and writes its report (no timing is checked)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_serve_reports_load_levels_and_soak_memory(model_dirs, tmp_path):
    out = tmp_path / "serve.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bark_onnx.cli", "bench", "serve", "--model", str(model_dirs["suno-tiny"]),
         "--max-batch", "2", "--requests", "4", "--soak", "6", "--max-gen-duration-s", "0.5",
         "--time-limit", "600", "--out", str(out)],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["max_batch"] == 2 and not result["time_limit_reached"]
    assert [(name, level["concurrency"]) for name, level in result["levels"].items()] == [("1x", 2), ("2x", 4)]
    for level in [*result["levels"].values(), result["soak"]]:
        assert level["errors"] == 0 and level["ok"] == level["sent"], level
        assert level["requests_per_min"] > 0 and 0 < level["ttfa_p50_s"] <= level["ttfa_p95_s"]
    assert result["soak"]["sent"] == 6
    assert result["soak"]["rss_before_mb"] > 0 and result["soak"]["rss_after_mb"] > 0
    assert "| 1x | 2 | 4 | 4 | 0 |" in proc.stdout and "resident memory" in proc.stdout
