"""Where bark-onnx keeps its own files: the user cache.

`$XDG_CACHE_HOME/bark_onnx` (`~/.cache/bark_onnx` by default) holds the models
exported on first use (cache.py) and TensorRT's engines and timing caches
(`trt/`, one folder per model directory).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def cache_root() -> Path:
    return cache_home() / "bark_onnx"


def trt_cache_dir(model_dir: Path) -> Path:
    """TensorRT's engine and timing caches for a model directory, under the user cache.

    The folder's key covers the graphs' path, size and time: an engine holds the
    weights, so a model exported again must not reuse the engines of the old one.
    """
    model_dir = Path(model_dir).resolve()
    digest = hashlib.sha256(str(model_dir).encode())
    for path in sorted(model_dir.glob("*.onnx*")):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return cache_root() / "trt" / f"{model_dir.name}-{digest.hexdigest()[:12]}"
