"""Random-weight checkpoints and their exports for the benchmarks, cached between runs."""

from __future__ import annotations

import sys
from pathlib import Path

from bark_onnx.cache import cache_root
from bark_onnx.config import CONFIG_FILE


def default_root() -> Path:
    return cache_root() / "bench"


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def prepare(size: str, precisions: list[str], root: Path | None = None, progress: bool = True) -> dict[str, Path]:
    """{'checkpoint': HF-layout checkpoint, 'onnx-<precision>': model directory, ...} for `size`."""
    from bark_onnx.export.exporter import export_model
    from bark_onnx.export.factory import write_checkpoint

    base = (root or default_root()) / size
    checkpoint = base / "checkpoint-hf"
    if not (checkpoint / "config.json").is_file():
        if progress:
            print(f"writing a random-weight {size} checkpoint to {checkpoint}", file=sys.stderr)
        write_checkpoint(checkpoint, layout="hf", size=size)
    paths = {"checkpoint": checkpoint}
    for precision in precisions:
        model_dir = base / f"onnx-{precision}"
        if not (model_dir / CONFIG_FILE).is_file():
            export_model(str(checkpoint), model_dir, precision=precision, progress=progress, overwrite=True,
                         report=(lambda line: print(line, file=sys.stderr)) if progress else (lambda line: None))
        paths[f"onnx-{precision}"] = model_dir
    return paths
