"""Every graph call type against this machine's measured peaks: `bark-onnx bench roofline`.

    bark-onnx bench roofline --size small --precision int8 --out roofline.json

First the machine, measured with ONNX Runtime's own kernels on the same threads:
- its int8 GEMM (`DynamicQuantizeLinear` + `MatMulIntegerToFloat`, the form `quantize_dynamic`
  writes) and its fp32 GEMM, each on a chain of bark-small-shaped products (768 x 3072 and
  3072 x 768) at the row counts the calls have (1, 8, 32, 887, 1024);
- a memory read: the faster of `ReduceSum` over 400 MB and a one-row fp32 product with 256 MB of
  weights, both far beyond the caches.

Then each call type of a model directory, timed through the runtime's own decoder and sessions:
semantic and coarse steps at 1, 8 and 32 rows (700 and 900 cached positions: Bark's contexts),
a coarse window prefill (887 positions), a fine pass (1024 positions, one codebook) and a codec
chunk (320 frames). For each: the multiply-adds on weights (int8 in int8 graphs) and in attention
(always fp32: the product of keys and queries, and of probabilities and values, causal where the
graph is), the bytes moved (weights once per call, the KV cache read), the median time, and a bound:

    bound = max(weight MACs / GEMM peak at the call's rows + attention MACs / fp32 peak,
                bytes / read rate)

`of bound` is bound / time: 1.0 runs at the machine's rate; what bounds it says which term is larger.

Last, a whole 13 s segment: every call Bark's algorithm makes (roofline.segment_calls), without a
voice, with one, and eight requests with voices in step, each stage summed at its calls' bounds
(the fastest these kernels allow on this machine) and at the pace the timed calls ran (what the
runtime should take: compare it with `bark-onnx bench stages`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .roofline import (
    COARSE_HEAD, SEMANTIC_HEAD, WEIGHT_BYTES, Work, best_time, causal_work, codec_work, cpu_session, fine_work,
    segment_calls, stream_rate,
)
from .workload import SEGMENT, STAGES, Workload

if TYPE_CHECKING:
    from bark_onnx.runtime.model.config import ModelConfig

CHAIN = 24  # products per chain: 12 pairs of (768 x 3072, 3072 x 768), a bark-small MLP each
SHAPES = ((768, 3072), (3072, 768))
READ_FLOATS = 100_000_000  # 400 MB
STEP_ROWS = (1, 8, 32)
PAST = {"semantic": 700, "coarse": 900}
PREFILL = 887  # a coarse window: 256 semantic + infer + 630 coarse history
FINE_POSITIONS = 1024
CODEC_FRAMES = 320
TIMED = 12  # calls timed per step case (after 2 untimed)


# ------------------------------------------------------------------ the machine


def _chain(kind: str, threads: int):
    """A session of CHAIN products x @ W1 @ W2 ... in int8 (ORT's dynamic form) or fp32."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(CHAIN):
        w = rng.standard_normal(SHAPES[i % 2], dtype=np.float32) * 0.02
        if kind == "fp32":
            inits.append(numpy_helper.from_array(w, f"w{i}"))
            nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"y{i}"]))
        else:
            scale = np.float32(np.abs(w).max() / 127)
            inits += [numpy_helper.from_array(np.round(w / scale).astype(np.int8), f"w{i}"),
                      numpy_helper.from_array(scale, f"ws{i}")]
            nodes += [helper.make_node("DynamicQuantizeLinear", [x], [f"q{i}", f"s{i}", f"z{i}"]),
                      helper.make_node("MatMulIntegerToFloat", [f"q{i}", f"w{i}", f"s{i}", f"ws{i}", f"z{i}"],
                                       [f"y{i}"], domain="com.microsoft")]
        x = f"y{i}"
    return cpu_session(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", SHAPES[0][0]])],
                    [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits, threads)


def _seconds(fn, calls: int) -> list[float]:
    fn()  # untimed: the first call allocates
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def _median_seconds(fn, calls: int) -> float:
    return float(np.median(_seconds(fn, calls)))


def gemm_peaks(kind: str, rows: tuple[int, ...], threads: int) -> dict[int, float]:
    """MACs per second of ONNX Runtime's int8 or fp32 GEMM at each row count (bark-small's shapes)."""
    session = _chain(kind, threads)  # built once: quantizing 24 products takes longer than timing them
    macs = sum(int(np.prod(SHAPES[i % 2])) for i in range(CHAIN))
    peaks = {}
    for m in rows:
        x = np.random.default_rng(1).standard_normal((m, SHAPES[0][0]), dtype=np.float32)
        peaks[m] = m * macs / best_time(lambda: session.run(None, {"x": x}), 15 if m <= 32 else 3)
    return peaks


def read_rate(threads: int) -> float:
    """Bytes per second ONNX Runtime reads from memory: the faster of a sum over 400 MB and a
    one-row fp32 product with 256 MB of weights (either alone reads below what the steps reach on
    some runs)."""
    return max(_sum_rate(threads), stream_rate(threads))


def _sum_rate(threads: int) -> float:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    session = cpu_session([helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0)],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [READ_FLOATS])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [], threads)
    x = ort.OrtValue.ortvalue_from_numpy(np.ones(READ_FLOATS, np.float32))
    binding = session.io_binding()
    binding.bind_ortvalue_input("x", x)
    binding.bind_output("y")
    return 4 * READ_FLOATS / best_time(lambda: session.run_with_iobinding(binding), 5)


def machine_peaks(rows: tuple[int, ...], threads: int, int8: bool) -> dict:
    """{'gemm': {rows: MAC/s}, 'fp32': MAC/s (the largest row count's fp32 GEMM), 'read': B/s}."""
    kind = "int8" if int8 else "fp32"
    gemm = gemm_peaks(kind, rows, threads)
    fp32 = gemm[max(rows)] if not int8 else gemm_peaks("fp32", (max(rows),), threads)[max(rows)]
    return {"gemm_kind": kind, "gemm": gemm, "fp32": fp32, "read": read_rate(threads)}


# ------------------------------------------------------------------ the calls


def _time_steps(decoder, rows: int, past: int, band: tuple[int, int], rng) -> float:
    seqs = [decoder.open() for _ in range(rows)]
    try:
        decoder.prefill(seqs, rng.integers(*band, (rows, past)))
        times = []
        for i in range(TIMED + 2):
            t = time.perf_counter()
            decoder.step(seqs, rng.integers(*band, rows))
            times.append(time.perf_counter() - t)
        return float(np.median(times[2:]))
    finally:
        for seq in seqs:
            decoder.close(seq)


def _time_prefill(decoder, positions: int, band: tuple[int, int], rng, rounds: int) -> float:
    times = []
    for _ in range(rounds + 1):
        seq = decoder.open()
        ids = rng.integers(*band, (1, positions))
        t = time.perf_counter()
        decoder.prefill([seq], ids)
        times.append(time.perf_counter() - t)
        decoder.close(seq)
    return float(np.median(times[1:]))


def measure_calls(model_dir: Path, threads: int, rounds: int = 3) -> tuple[list[dict], ModelConfig, int]:
    """Each call type's work and median seconds on the CPU provider, the model's config, and the
    bytes of one cached key or value element."""
    from bark_onnx import Bark

    tts = Bark.load(model_dir, providers=["cpu"], threads=threads, max_batch=max(STEP_ROWS))
    try:
        config = tts.config
        wbytes = WEIGHT_BYTES[config.precision]
        rng = np.random.default_rng(0)
        calls = []
        for stage, band, head in (("semantic", (0, 10_000), SEMANTIC_HEAD), ("coarse", (10_000, 12_048), COARSE_HEAD)):
            decoder, cfg = tts.decoders[stage], getattr(config, stage)
            kv = np.dtype(decoder.kv_dtype).itemsize
            for rows in STEP_ROWS:
                seconds = _time_steps(decoder, rows, PAST[stage], band, rng)
                calls.append({"call": f"{stage} step", "rows": rows, "positions": f"1 after {PAST[stage]}",
                              "seconds": seconds,
                              "work": causal_work(cfg, head, rows, 1, PAST[stage], wbytes, kv)})
            if stage == "coarse":
                seconds = _time_prefill(decoder, PREFILL, band, rng, rounds)
                calls.append({"call": "coarse window prefill", "rows": 1, "positions": str(PREFILL),
                              "seconds": seconds, "work": causal_work(cfg, head, 1, PREFILL, 0, wbytes, kv)})
        fine = tts.sessions["fine"]
        feed = {"codes": rng.integers(0, 1024, (1, FINE_POSITIONS, 8)), "pred_idx": np.array(2, np.int64),
                "temperature": np.full(1, 0.5, np.float32),
                "uniform": rng.random((1, FINE_POSITIONS), dtype=np.float32)}
        seconds = _median_seconds(lambda: fine.run(["tokens"], feed), rounds)
        calls.append({"call": "fine pass", "rows": 1, "positions": str(FINE_POSITIONS), "seconds": seconds,
                      "work": fine_work(config.fine, FINE_POSITIONS, 1024, wbytes)})
        codec = tts.sessions["codec"]
        codes = {"codes": rng.integers(0, 1024, (1, 8, CODEC_FRAMES))}
        seconds = _median_seconds(lambda: codec.run(None, codes), rounds)
        calls.append({"call": "codec chunk", "rows": 1, "positions": f"{CODEC_FRAMES} frames", "seconds": seconds,
                      "work": codec_work(config.codec, CODEC_FRAMES, codec_bytes(Path(model_dir)))})
        return calls, config, kv
    finally:
        tts.close()


def rows_of(calls: list[dict], peaks: dict) -> list[dict]:
    """The report's rows: work, time, achieved rates and the bound of each call."""
    out = []
    for c in calls:
        w: Work = c["work"]
        bound, by = w.bound(peaks)
        macs = w.weight_macs + w.attention_macs
        moved = w.weight_bytes + w.cache_bytes
        out.append({"call": c["call"], "rows": c["rows"], "positions": c["positions"],
                    "weight_gmac": w.weight_macs / 1e9, "attention_gmac": w.attention_macs / 1e9,
                    "weight_mb": w.weight_bytes / 1e6, "cache_mb": w.cache_bytes / 1e6,
                    "ms": c["seconds"] * 1e3, "gmac_per_s": macs / c["seconds"] / 1e9,
                    "gb_per_s": moved / c["seconds"] / 1e9, "bound_ms": bound * 1e3, "bound_by": by,
                    "of_bound": bound / c["seconds"]})
    return out


# ------------------------------------------------------------------ a whole segment

# (case, voice, requests in step): one request as `bench stages` runs it, and eight at once
SEGMENT_CASES = (("without a voice", False, 1), ("with a voice", True, 1), ("with a voice", True, 8))


def codec_bytes(model_dir: Path) -> float:
    return float(sum(p.stat().st_size for p in model_dir.glob("codec.onnx*")))


def _paces(rows: list[dict]) -> dict:
    """of_bound of each timed call type, by the (kind, rows) that `segment_calls` names."""
    paces = {}
    for r in rows:
        kind = {"coarse window prefill": "prefill", "fine pass": "fine pass", "codec chunk": "codec chunk"}.get(
            r["call"], r["call"])  # 'semantic step', 'coarse step'
        paces[(kind, r["rows"])] = r["of_bound"]
    return paces


def segment_rows(config: ModelConfig, precision: str, peaks: dict, rows: list[dict], kv_bytes: int, codec_weights: float,
                 workload: Workload = SEGMENT, cases=SEGMENT_CASES) -> list[dict]:
    """One segment's calls (`segment_calls`), each stage summed twice: at the calls' bounds, and at
    the pace the timed calls of the same type ran (bound / of_bound; a prefill, fine pass or codec
    call at its one-row pace, a step at its row count's)."""
    configs = {"semantic": config.semantic, "coarse": config.coarse, "fine": config.fine}
    paces = _paces(rows)
    out = []
    for case, voice, requests in cases:
        bound, paced = dict.fromkeys(STAGES, 0.0), dict.fromkeys(STAGES, 0.0)
        for stage, kind, work in segment_calls(configs, config.codec, workload, precision, voice, requests,
                                               kv_bytes, codec_weights):
            seconds = work.bound(peaks)[0]
            bound[stage] += seconds
            paced[stage] += seconds / (paces[(f"{stage} step", requests)] if kind == "step" else paces[(kind, 1)])
        out.append({"case": case, "requests": requests, "semantic_tokens": workload.semantic_tokens,
                    "coarse_tokens": workload.coarse_tokens, "frames": workload.frames,
                    "audio_s": requests * workload.audio_seconds, "bound_s": bound, "paced_s": paced})
    return out


def table(result: dict) -> str:
    p = result["peaks"]
    gemm = ", ".join(f"{m} rows {r / 1e9:.0f}" for m, r in p["gemm"].items())
    lines = [f"machine ({result['threads']} threads, CPU flags {result['cpu_flags']}): {p['gemm_kind']} GEMM GMAC/s at "
             f"{gemm}; fp32 GEMM {p['fp32'] / 1e9:.0f} GMAC/s; memory read {p['read'] / 1e9:.1f} GB/s",
             "", "| call | rows | positions | weight GMAC | attention GMAC | weights MB | cache MB | ms | GMAC/s "
             "| GB/s | bound ms | bound by | of bound |", "|" + "---|" * 13]
    for r in result["calls"]:
        lines.append(f"| {r['call']} | {r['rows']} | {r['positions']} | {r['weight_gmac']:.3f} | "
                     f"{r['attention_gmac']:.3f} | {r['weight_mb']:.1f} | {r['cache_mb']:.1f} | {r['ms']:.2f} | "
                     f"{r['gmac_per_s']:.0f} | {r['gb_per_s']:.1f} | {r['bound_ms']:.2f} | {r['bound_by']} | "
                     f"{r['of_bound']:.2f} |")
    if result.get("segment"):
        first = result["segment"][0]
        lines += ["", f"A {first['audio_s'] / first['requests']:.1f} s segment ({first['semantic_tokens']} semantic "
                  f"tokens, {first['coarse_tokens']} coarse, {first['frames']} frames), every call of each stage "
                  "summed (s): at the calls' bounds / at the pace of the calls above", "",
                  "| case | requests | " + " | ".join(STAGES) + " | total | audio s per s |", "|" + "---|" * 8]
        for r in result["segment"]:
            b, p = r["bound_s"], r["paced_s"]
            cells = [f"{b[s]:.2f} / {p[s]:.2f}" for s in STAGES]
            total_b, total_p = sum(b.values()), sum(p.values())
            lines.append(f"| {r['case']} | {r['requests']} | " + " | ".join(cells) + f" | {total_b:.1f} / "
                         f"{total_p:.1f} | {r['audio_s'] / total_b:.2f} / {r['audio_s'] / total_p:.2f} |")
    return "\n".join(lines)


def run(model_dir: Path, threads: int | None = None, rounds: int = 3, out=sys.stdout) -> dict:
    from bark_onnx.runtime.sessions.session import default_threads

    from .report import cpu_flags

    threads = threads or default_threads()
    calls, config, kv_bytes = measure_calls(model_dir, threads, rounds)
    precision = config.precision
    peaks = machine_peaks(tuple(sorted({c["work"].gemm_rows for c in calls if c["work"].weight_macs}
                                       | {1, 8, 32})), threads, precision in ("int8", "int4"))
    rows = rows_of(calls, peaks)
    result = {"model": str(model_dir), "precision": precision, "threads": threads, "cpu_flags": cpu_flags(),
              "peaks": peaks, "calls": rows,
              "segment": segment_rows(config, precision, peaks, rows, kv_bytes, codec_bytes(Path(model_dir)))}
    print(table(result), file=out, flush=True)
    return result
