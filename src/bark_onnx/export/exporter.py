"""Checkpoint -> model directory: the graphs, config.json, tokenizer.json and voices.

The directory is written under a temporary name beside the target and renamed
into place only when complete (and validated, when asked), so an export that
fails leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

from bark_onnx.version import __version__
from bark_onnx.runtime import constants as C
from bark_onnx.runtime.model.config import PRECISIONS, VOICES_DIR, ModelConfig
from bark_onnx.runtime.errors import BarkOnnxError

from bark_onnx.kernels.quantize import QUANTIZED, fp16_storage, quantize_graph

from .checkpoints import load_checkpoint
from .codec_graph import build_codec
from .fine_graph import build_fine
from .gpt_graphs import build_causal
from .models import build_models
from .onnx_builder import OPSET
from .tokenizer import write_tokenizer

logger = logging.getLogger(__name__)

SEMANTIC_LOGITS, COARSE_LOGITS = C.SEMANTIC_LOGITS, C.COARSE_LOGITS  # the columns each causal loop samples from


def save_graph(model: onnx.ModelProto, path: Path) -> int:
    """Write a graph with its weights in `<name>.data` beside it; returns the bytes on disk."""
    data_name = path.name + ".data"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=1024)
    return path.stat().st_size + ((path.parent / data_name).stat().st_size if (path.parent / data_name).exists() else 0)


def save_step_graph(step: onnx.ModelProto, path: Path, full_graph: Path) -> int:
    """Write a step-only graph whose weights point into the data file of `full_graph` (same names,
    same values), so the two graphs share it on disk; returns the bytes the step graph adds."""
    stored = {t.name: t for t in onnx.load(str(full_graph), load_external_data=False).graph.initializer
              if t.data_location == onnx.TensorProto.EXTERNAL}
    for tensor in step.graph.initializer:
        twin = stored.get(tensor.name)
        if twin is None or tensor.name.startswith("/const/"):
            continue  # small constants stay inline (their names are per graph)
        if list(twin.dims) != list(tensor.dims) or twin.data_type != tensor.data_type:
            raise RuntimeError(f"step graph weight {tensor.name} differs from the full graph's")
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        del tensor.external_data[:]
        tensor.external_data.extend(twin.external_data)
    onnx.save_model(step, str(path))
    return path.stat().st_size


def _fp16_codec(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=True)


class StepLog:
    """Numbered step lines on stderr with the time each step took."""

    def __init__(self, total: int, enabled: bool = True, stream=sys.stderr):
        self.total, self.enabled, self.stream = total, enabled, stream
        self.n = 0
        self.t = time.perf_counter()

    def __call__(self, message: str) -> None:
        now = time.perf_counter()
        self.n += 1
        if self.enabled:
            print(f"[{self.n}/{self.total}] {message}", file=self.stream, flush=True)
        self.t = now

    def done(self, message: str) -> None:
        if self.enabled:
            print(f"      {message} ({time.perf_counter() - self.t:.1f} s)", file=self.stream, flush=True)


def _publish_permissions(root: Path) -> None:
    """mkdtemp and onnx write owner-only files; give the model the usual umask permissions."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [root, *root.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished `tmp` to `out`, replacing an older export there."""
    _publish_permissions(tmp)
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def export_model(
    checkpoint: str,
    out_dir: str | Path,
    precision: str = "fp32",
    kv_cache: str = "inplace",
    validate: bool = False,
    codec: str | None = None,
    tokenizer: str | None = None,
    small: bool | None = None,
    overwrite: bool = False,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
) -> Path:
    """Export a Bark checkpoint to an ONNX model directory; returns its path.

    The steps: read the checkpoint; build and write the semantic and coarse graphs (with their
    step-only twins), the fine graph and the codec; write the tokenizer and the voices; write and
    reload config.json; optionally validate every graph against PyTorch; move the directory into place.
    """
    out = _check_target(out_dir, precision, overwrite)
    report = report or (lambda line: print(line, file=sys.stderr))
    step = StepLog(8 if validate else 7, progress)

    step(f"reading checkpoint {checkpoint}")
    source = load_checkpoint(checkpoint, codec=codec, tokenizer=tokenizer, small=small)
    models = build_models(source)
    step.done(f"{source.info['format']} layout, " + ", ".join(
        f"{s} {c.n_layer}x{c.n_embd}" for s, c in source.configs.items()))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        graphs, steps, sizes = _write_causal_graphs(source, tmp, precision, kv_cache, step)
        graphs["fine"], sizes["fine"] = _write_fine_graph(source, tmp, precision, kv_cache, step)
        graphs["codec"], sizes["codec"] = _write_codec_graph(models["codec"], tmp, precision, step)
        _write_tokenizer_and_voices(source, tmp, step)
        _write_config(source, tmp, graphs, steps, precision, kv_cache, step)
        if validate:
            _validate(tmp, models, step, report)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    total = sum(sizes.values())
    report(f"wrote {out} ({total / 1e6:.1f} MB: " + ", ".join(f"{k} {v / 1e6:.1f}" for k, v in sizes.items()) + ")")
    return out


def _check_target(out_dir: str | Path, precision: str, overwrite: bool) -> Path:
    """The output directory, resolved; refused when the precision is unknown or it would replace
    something that is not a model directory (or anything, without `overwrite`)."""
    if precision not in PRECISIONS:
        raise BarkOnnxError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not overwrite:
        raise BarkOnnxError(f"{out} already exists; pass --force to replace it")
    if out.exists() and not (out / "config.json").is_file():
        raise BarkOnnxError(f"{out} exists and is not a bark-onnx model directory; refusing to replace it")
    return out


def _dtype(precision: str) -> type:
    return np.float16 if precision == "fp16" else np.float32


def _write_graph(model: onnx.ModelProto, tmp: Path, file: str, precision: str) -> int:
    """A transformer graph at its precision (int8/int4: quantized from the fp32 graph, which is
    then dropped); returns the bytes on disk."""
    if precision not in QUANTIZED:
        return save_graph(model, tmp / file)
    fp32 = tmp / f"fp32-{file}"
    save_graph(model, fp32)
    quantize_graph(fp32, tmp / file, precision)
    fp32.unlink()
    (tmp / f"{fp32.name}.data").unlink()
    return (tmp / file).stat().st_size + (tmp / f"{file}.data").stat().st_size


def _write_causal_graphs(source, tmp: Path, precision: str, kv_cache: str, step: StepLog) -> tuple[dict, dict, dict]:
    """The semantic and coarse graphs, and with the in-place cache (unquantized) their step-only
    twins for CUDA graphs (see gpt_graphs.py), sharing the full graph's weights file; returns
    (graphs, step graphs, bytes) by stage."""
    graphs, steps, sizes = {}, {}, {}
    for stage, logits in (("semantic", SEMANTIC_LOGITS), ("coarse", COARSE_LOGITS)):
        step(f"building the {stage} graph (KV cache '{kv_cache}', {precision})")
        cfg, weights = source.configs[stage], source.weights[stage]
        model, graphs[stage] = build_causal(cfg, weights, stage, logits, kv=kv_cache, dtype=_dtype(precision))
        sizes[stage] = _write_graph(model, tmp, graphs[stage].file, precision)
        if kv_cache == "inplace" and precision not in QUANTIZED:
            model, steps[stage] = build_causal(cfg, weights, stage, logits, dtype=_dtype(precision), step_only=True)
            sizes[stage] += save_step_graph(model, tmp / steps[stage].file, tmp / graphs[stage].file)
        step.done(f"{sizes[stage] / 1e6:.1f} MB")
    return graphs, steps, sizes


def _write_fine_graph(source, tmp: Path, precision: str, kv_cache: str, step: StepLog) -> tuple[Any, int]:
    """The fine graph (its attention fused where the causal graphs' cache is in place); (info, bytes)."""
    step(f"building the fine graph ({precision})")
    model, info = build_fine(source.configs["fine"], source.weights["fine"], C.CODEBOOK_SIZE,
                             fused=(kv_cache == "inplace"), dtype=_dtype(precision))
    size = _write_graph(model, tmp, info.file, precision)
    step.done(f"{size / 1e6:.1f} MB")
    return info, size


def _write_codec_graph(codec, tmp: Path, precision: str, step: StepLog) -> tuple[Any, int]:
    """The EnCodec decoder; (info, bytes). It computes in fp32 for int8/int4 too (audio-critical);
    there its weights are stored in fp16 (half the bytes on disk, rounding far below the audio's
    noise floor)."""
    step("exporting the EnCodec decoder")
    model, info = build_codec(codec, fold_trims=precision != "fp16")
    if precision == "fp16":
        model = _fp16_codec(model)
    elif precision in QUANTIZED:
        fp16_storage(model.graph)
    size = save_graph(model, tmp / info.file)
    step.done(f"{size / 1e6:.1f} MB")
    return info, size


def _write_tokenizer_and_voices(source, tmp: Path, step: StepLog) -> None:
    step("writing tokenizer and voices")
    write_tokenizer(source.tokenizer, tmp / "tokenizer.json")
    for name, voice in source.voices.items():
        path = tmp / VOICES_DIR / f"{name}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **voice)
    step.done(f"{len(source.voices)} voices")


def _write_config(source, tmp: Path, graphs: dict, steps: dict, precision: str, kv_cache: str,
                  step: StepLog) -> None:
    """config.json, then the directory loaded back as the runtime will load it."""
    config = ModelConfig(
        semantic=source.configs["semantic"], coarse=source.configs["coarse"], fine=source.configs["fine"],
        codec=source.codec_config, graphs=graphs, step_graphs=steps, precision=precision, kv_cache=kv_cache,
        opset=OPSET,
        bark_onnx_version=__version__,
        source={k: str(v) for k, v in source.info.items()},
        voices=tuple(sorted(source.voices)),
    )
    config.save(tmp)
    step("checking the directory loads")
    ModelConfig.load(tmp)
    step.done("config.json ok")


def _validate(tmp: Path, models: dict, step: StepLog, report: Callable[[str], None]) -> None:
    """Every graph against PyTorch; ValidationError naming the outputs beyond the tolerance."""
    from .validate import ValidationError, validate_model_dir

    step("validating every graph against PyTorch")
    checks = validate_model_dir(tmp, models)
    for check in checks:
        report(str(check))
    failed = [c for c in checks if not c.ok]
    if failed:
        raise ValidationError(
            f"{len(failed)} output(s) differ from PyTorch beyond the tolerance: "
            + "; ".join(f"{c.graph} {c.output} ({c.max_abs:.2e})" for c in failed)
        )
    step.done("all graphs match")
