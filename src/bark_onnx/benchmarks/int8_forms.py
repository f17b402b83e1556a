"""Two int8 forms of the coarse graph side by side: activations quantized per tensor or per row.

- per tensor: ONNX Runtime's `quantize_dynamic` (`DynamicQuantizeMatMul`) gives a
  call's whole activation tensor one scale, so a row's logits depend on the
  other rows of the batch (and a prefill's on the other positions).
- per row: the export's form (kernels/quantize.py): each row has its own scale.

Both are made from the same random-weight coarse graph and timed in this
process in alternating rounds (per tensor, per row, per tensor, ...), so a
shared machine's drift hits both alike: the window prefill (256 + 1 + 630
tokens) and a one-token step after 600 cached positions, at batch 1 and 8.
Also printed: how far a row's logits move between alone and in a batch of 8.

    bark-onnx bench int8 --size small --rounds 5
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PREFILL, PAST, STEPS = 887, 600, 10
FORMS = ("per tensor", "per row")


def _per_tensor(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import onnx

    quiet = logging.getLogger("root")  # the quantizer logs through the root logger
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         use_external_data_format=True,
                         extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        quiet.setLevel(level)


def _decoder(path: Path, cfg, threads: int, rows: int):
    from bark_onnx.runtime.model.config import GraphInfo
    from bark_onnx.runtime.engine.decoder import CausalDecoder
    from bark_onnx.runtime.sessions.session import create_session, make_placement

    placement = make_placement(["cpu"], threads)
    session = create_session(path, placement)
    info = GraphInfo(file=path.name, inputs=(), outputs=(), logits_size=session.get_outputs()[0].shape[-1])
    return CausalDecoder(session, info, cfg, "inplace", placement, max_rows=rows)


def _open(dec, n: int) -> list:
    return [dec.open() for _ in range(n)]


def _close(dec, seqs: list) -> None:
    for seq in seqs:
        dec.close(seq)


def _round(dec, prompt: np.ndarray) -> dict[str, float]:
    """Seconds of one prefill and the median one-token step, at batch 1 and at the prompt's batch."""
    times = {}
    for batch in (1, len(prompt)):
        rows = prompt[:batch]
        seqs = _open(dec, batch)  # fresh sequences: nothing of an earlier prompt is kept
        t = time.perf_counter()
        dec.prefill(seqs, rows)
        times[f"prefill b{batch}"] = time.perf_counter() - t
        _close(dec, seqs)
        seqs = _open(dec, batch)
        dec.prefill(seqs, rows[:, :PAST])
        steps = []
        for i in range(STEPS):
            t = time.perf_counter()
            dec.step(seqs, rows[:, PAST + i])
            steps.append(time.perf_counter() - t)
        times[f"step b{batch}"] = float(np.median(steps))
        _close(dec, seqs)
    return times


def _row_drift(dec, prompt: np.ndarray) -> float:
    """Largest change of a row's prefill logits between the batch and that row alone."""
    seqs = _open(dec, len(prompt))
    together = dec.prefill(seqs, prompt).logits
    _close(dec, seqs)
    drift = 0.0
    for i in range(len(prompt)):
        (seq,) = _open(dec, 1)
        drift = max(drift, float(np.abs(dec.prefill([seq], prompt[i:i + 1]).logits[0] - together[i]).max()))
        dec.close(seq)
    return drift


def run(size: str = "small", threads: int | None = None, rounds: int = 5, batch: int = 8, out=sys.stdout,
        root: Path | None = None) -> dict:
    from bark_onnx.export.checkpoints import load_checkpoint
    from bark_onnx.export.exporter import COARSE_LOGITS, save_graph
    from bark_onnx.export.gpt_graphs import build_causal
    from bark_onnx.kernels.quantize import quantize_graph
    from bark_onnx.runtime.sessions.session import default_threads

    from .prepare import prepare
    from .report import cpu_flags

    threads = threads or default_threads()
    source = load_checkpoint(str(prepare(size, [], root, progress=False)["checkpoint"]))
    cfg = source.configs["coarse"]
    rng = np.random.default_rng(0)
    prompt = rng.integers(10_000, 12_048, (batch, PREFILL))
    with tempfile.TemporaryDirectory(prefix="bark-onnx-int8-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        save_graph(build_causal(cfg, source.weights["coarse"], "coarse", COARSE_LOGITS)[0], fp32)
        del source
        _per_tensor(fp32, Path(tmp) / "tensor.onnx")
        quantize_graph(fp32, Path(tmp) / "row.onnx", "int8")
        decoders = {form: _decoder(Path(tmp) / name, cfg, threads, batch)
                    for form, name in zip(FORMS, ("tensor.onnx", "row.onnx"))}
        drift = {form: _row_drift(dec, prompt) for form, dec in decoders.items()}
        for dec in decoders.values():  # warm-up
            _round(dec, prompt)
        times: dict[str, dict[str, list[float]]] = {form: {} for form in FORMS}
        for _ in range(rounds):
            for form in FORMS:
                for key, seconds in _round(decoders[form], prompt).items():
                    times[form].setdefault(key, []).append(seconds)
    result = {"threads": threads, "rounds": rounds, "batch": batch, "row_drift": drift,
              "median_ms": {f: {k: float(np.median(v)) * 1e3 for k, v in t.items()} for f, t in times.items()},
              "min_ms": {f: {k: float(np.min(v)) * 1e3 for k, v in t.items()} for f, t in times.items()}}
    result["cpu_flags"] = cpu_flags()
    print(f"bark-{size} coarse graph, {threads} threads, CPU flags {result['cpu_flags']}; "
          f"median of {rounds} alternating rounds (min), ms", file=out)
    print(f"{'':22s}" + "".join(f"{k:>22s}" for k in times["per tensor"]), file=out)
    for form in FORMS:
        cells = [f"{result['median_ms'][form][k]:.1f} ({result['min_ms'][form][k]:.1f})" for k in times[form]]
        print(f"{form:22s}" + "".join(f"{c:>22s}" for c in cells), file=out)
    ratio = [result["median_ms"]["per row"][k] / result["median_ms"]["per tensor"][k] for k in times["per row"]]
    print(f"{'per row / per tensor':22s}" + "".join(f"{r:>22.2f}" for r in ratio), file=out)
    print("largest logit change of a row, alone vs in the batch: "
          + ", ".join(f"{f} {d:.2e}" for f, d in drift.items()), file=out, flush=True)
    return result
