"""The CPU fast path, step by step: the coarse graph's window prefill and one-token step, before and after.

Each variant is built from the same random-weight checkpoint and timed in
this process (no torch work runs here before timing) on the coarse stage's
two hot calls: the prefill of a full window (256 semantic + infer + 630 coarse
tokens) and a one-token step with 600 cached positions.

    bark-onnx bench fastpath --size small
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PREFILL = 887
PAST = 600


def _time(fn, repeat: int) -> tuple[float, float, float]:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), float(min(times)), float(max(times))


def measure(model_path: Path, cfg, kv: str, threads: int, optimize: bool = True) -> dict:
    import onnxruntime as ort

    from bark_onnx.runtime.model.config import GraphInfo
    from bark_onnx.runtime.engine.decoder import CausalDecoder
    from bark_onnx.runtime.sessions.providers import Placement

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    n_logits = session.get_outputs()[0].shape[-1]
    info = GraphInfo(file=model_path.name, inputs=(), outputs=(), logits_size=n_logits)
    dec = CausalDecoder(session, info, cfg, kv, Placement(("CPUExecutionProvider",), threads))
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, 12_096, (1, PREFILL))

    def prefill():
        seq = dec.open()  # a fresh sequence: nothing of an earlier prompt is kept
        dec.prefill([seq], prompt)
        dec.close(seq)

    pre = _time(prefill, 3)
    seq = dec.open()
    dec.prefill([seq], prompt[:, :PAST])
    steps = []
    for i in range(15):  # positions PAST .. PAST + 14
        t = time.perf_counter()
        dec.step([seq], prompt[:, i])
        steps.append(time.perf_counter() - t)
    dec.close(seq)
    return {"prefill_s": pre[0], "prefill_min": pre[1], "prefill_max": pre[2],
            "step_ms": float(np.median(steps)) * 1e3, "step_min": min(steps) * 1e3, "step_max": max(steps) * 1e3}


def run(size: str = "small", threads: int | None = None, out=sys.stdout) -> list[dict]:
    from bark_onnx.export.checkpoints import load_checkpoint
    from bark_onnx.export.exporter import save_graph
    from bark_onnx.export.gpt_graphs import build_causal
    from bark_onnx.kernels.quantize import quantize_graph
    from bark_onnx.runtime.sessions.session import default_threads

    from .prepare import prepare

    threads = threads or default_threads()
    paths = prepare(size, ["fp32"])
    source = load_checkpoint(str(paths["checkpoint"]))
    cfg, state = source.configs["coarse"], source.weights["coarse"]
    del source
    variants = [  # (label, kv layout, logits columns, precision, ORT fusions, residual norms fused)
        ("standard ops, concatenated KV, full 12096-column head, no fusions", "concat", (0, 12_096), "fp32", False,
         False),
        ("+ logits sliced to the 2048 columns the loop reads", "concat", (10_000, 12_048), "fp32", False, False),
        ("+ fused LayerNorm/GELU/bias (ORT fusions of the standard graph)", "concat", (10_000, 12_048), "fp32",
         True, False),
        ("+ KV buffer written in place (GroupQueryAttention, BiasGelu)", "inplace", (10_000, 12_048), "fp32", True,
         False),
        ("  the same with residual LayerNorms as SkipLayerNormalization", "inplace", (10_000, 12_048), "fp32",
         True, True),
        ("+ int8 weights (activations quantized per row)", "inplace", (10_000, 12_048), "int8", True, False),
        ("int4 weights (MatMulNBits, block 32) instead of int8", "inplace", (10_000, 12_048), "int4", True, False),
    ]
    rows = []
    int8_path = None
    with tempfile.TemporaryDirectory(prefix="bark-onnx-fastpath-") as tmp:
        for i, (label, kv, logits, precision, optimize, skip_norm) in enumerate(variants):
            model, _ = build_causal(cfg, state, "coarse", logits, kv=kv, skip_norm=skip_norm)
            path = Path(tmp) / f"v{i}.onnx"
            save_graph(model, path)
            del model
            if precision != "fp32":
                quantize_graph(path, Path(tmp) / f"v{i}-{precision}.onnx", precision)
                path = Path(tmp) / f"v{i}-{precision}.onnx"
                int8_path = path if precision == "int8" else int8_path
            result = measure(path, cfg, kv, threads, optimize)
            rows.append({"variant": label, **result})
            print(f"{label:78s} prefill {result['prefill_s']:.2f} s ({result['prefill_min']:.2f}-"
                  f"{result['prefill_max']:.2f})   step {result['step_ms']:.1f} ms ({result['step_min']:.1f}-"
                  f"{result['step_max']:.1f})", file=out, flush=True)
        if threads > 1:  # the thread setting: all cores against one
            result = measure(int8_path, cfg, "inplace", 1)
            rows.append({"variant": f"int8 with 1 thread instead of {threads}", **result})
            print(f"{rows[-1]['variant']:78s} prefill {result['prefill_s']:.2f} s   step {result['step_ms']:.1f} ms",
                  file=out, flush=True)
    return rows
