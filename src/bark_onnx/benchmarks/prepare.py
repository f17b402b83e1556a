"""Random-weight checkpoints and their exports for the benchmarks, cached between runs.

An export is reused only while the code that made it is unchanged: each
model directory keeps a fingerprint of the export sources and of the ONNX
Runtime version (its quantizers write the int8/int4 graphs), so a run after
an upgrade times the graphs the current code writes, not stale ones.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from bark_onnx.runtime.model.paths import cache_root
from bark_onnx.runtime.model.config import CONFIG_FILE
from bark_onnx.runtime.files import write_atomic

FINGERPRINT_FILE = "bench-fingerprint.txt"


def default_root() -> Path:
    return cache_root() / "bench"


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def export_fingerprint() -> str:
    """A digest of the exporter's and quantizer's sources and of the ONNX Runtime version."""
    import onnxruntime

    from bark_onnx import export, kernels

    digest = hashlib.sha256(onnxruntime.__version__.encode())
    for package in (export, kernels):
        for path in sorted(Path(package.__file__).parent.glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _is_current(model_dir: Path, fingerprint: str) -> bool:
    marker = model_dir / FINGERPRINT_FILE
    return (model_dir / CONFIG_FILE).is_file() and marker.is_file() and marker.read_text().strip() == fingerprint


def prepare(size: str, precisions: list[str], root: Path | None = None, progress: bool = True) -> dict[str, Path]:
    """{'checkpoint': HF-layout checkpoint, 'onnx-<precision>': model directory, ...} for `size`."""
    from bark_onnx.export.exporter import export_model
    from bark_onnx.export.factory import write_checkpoint

    def say(line: str) -> None:
        if progress:
            print(line, file=sys.stderr)

    base = (root or default_root()) / size
    checkpoint = base / "checkpoint-hf"
    if not (checkpoint / "config.json").is_file():
        say(f"writing a random-weight {size} checkpoint to {checkpoint}")
        write_checkpoint(checkpoint, layout="hf", size=size)
    paths = {"checkpoint": checkpoint}
    fingerprint = export_fingerprint()
    for precision in precisions:
        model_dir = base / f"onnx-{precision}"
        if not _is_current(model_dir, fingerprint):
            if (model_dir / CONFIG_FILE).is_file():
                say(f"{model_dir} was exported by other code; exporting it again")
            export_model(str(checkpoint), model_dir, precision=precision, progress=progress, overwrite=True,
                         report=say)
            write_atomic(model_dir / FINGERPRINT_FILE, fingerprint + "\n")
        paths[f"onnx-{precision}"] = model_dir
    return paths
