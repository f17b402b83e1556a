"""Where models live when no directory is given: exported from the hub on first use.

The cache is `$XDG_CACHE_HOME/bark_onnx` (`~/.cache/bark_onnx` by default).
`suno/bark-small` or `suno/bark` is exported there the first time it is
needed, which takes the export extra (torch) and a network (never used
offline, see offline.py); a user who ran
Suno's Bark before has its `.pt` files in `$XDG_CACHE_HOME/suno/bark_v0`, and
those are exported instead, offline.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .config import CONFIG_FILE
from .errors import BarkOnnxError, ModelDirError
from .offline import OFFLINE_ENV, is_offline

logger = logging.getLogger(__name__)

HUB_MODELS = {True: "suno/bark-small", False: "suno/bark"}
# Suno's checkpoint files per model size and stage (bark-small and bark)
SUNO_FILES = {
    "small": {"semantic": "text.pt", "coarse": "coarse.pt", "fine": "fine.pt"},
    "large": {"semantic": "text_2.pt", "coarse": "coarse_2.pt", "fine": "fine_2.pt"},
}


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def cache_root() -> Path:
    return cache_home() / "bark_onnx"


def suno_use_small() -> bool:
    """Bark's switch: any non-empty SUNO_USE_SMALL_MODELS selects the small models."""
    return bool(os.environ.get("SUNO_USE_SMALL_MODELS", False))


def cached_model_dir(small: bool, precision: str = "fp32") -> Path:
    return cache_root() / f"{HUB_MODELS[small].replace('/', '--')}-{precision}"


def ensure_model(small: bool, precision: str = "fp32", progress: bool = True, offline: bool = False) -> Path:
    """The cached model directory, exported on first use (offline: only from local files)."""
    target = cached_model_dir(small, precision)
    if (target / CONFIG_FILE).is_file():
        return target
    suno_dir = cache_home() / "suno" / "bark_v0"
    files = SUNO_FILES["small" if small else "large"]
    if all((suno_dir / f).is_file() for f in files.values()):
        source = str(suno_dir / files["semantic"])
    elif is_offline(offline):
        raise ModelDirError(
            f"no model in {target}, and offline ({OFFLINE_ENV}, HF_HUB_OFFLINE or --offline) it cannot be "
            f"downloaded from {HUB_MODELS[small]}: pass --model with an exported model directory "
            "(made by 'bark-onnx export --checkpoint LOCAL_CHECKPOINT --out DIR')")
    else:
        source = HUB_MODELS[small]
    try:
        from bark_onnx.export.exporter import export_model
    except ImportError:
        raise BarkOnnxError(
            f"no model in {target}; exporting {source} there needs the export extra "
            "(pip install 'bark-onnx[export]'), or pass --model with an exported model directory"
        ) from None
    logger.warning("first use: exporting %s to %s", source, target)
    try:
        return export_model(source, target, precision=precision, progress=progress)
    except BarkOnnxError as err:
        raise ModelDirError(
            f"no model in {target}, and exporting {source} failed: {err}. Point at a local model with "
            "--model DIR (made by 'bark-onnx export --checkpoint LOCAL_CHECKPOINT --out DIR')"
        ) from None
