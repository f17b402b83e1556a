"""Where models live when no directory is given: exported from the hub on first use.

The cache is `$XDG_CACHE_HOME/bark_onnx` (`~/.cache/bark_onnx` by default).
`suno/bark-small` or `suno/bark` is exported there the first time it is
needed, which takes the export extra (torch) and a network (never used
offline, see hub.py); a user who ran
Suno's Bark before has its `.pt` files in `$XDG_CACHE_HOME/suno/bark_v0`, and
those are exported instead, offline. The precision follows the machine: fp16
where CUDA runs the sessions, int8 on the CPU (see sessions/session.machine_precision).

TensorRT's engines and timing caches live here too (`trt/`, see paths.py).
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

from ..errors import BarkOnnxError, ModelDirError
from ..sessions.session import machine_precision
from .config import CONFIG_FILE
from .hub import OFFLINE_ENV, is_offline
from .paths import cache_home, cache_root

logger = logging.getLogger(__name__)

HUB_MODELS = {True: "suno/bark-small", False: "suno/bark"}
# Suno's checkpoint files per model size and stage (bark-small and bark)
SUNO_FILES = {
    "small": {"semantic": "text.pt", "coarse": "coarse.pt", "fine": "fine.pt"},
    "large": {"semantic": "text_2.pt", "coarse": "coarse_2.pt", "fine": "fine_2.pt"},
}


def suno_use_small() -> bool:
    """Bark's switch: any non-empty SUNO_USE_SMALL_MODELS selects the small models."""
    return bool(os.environ.get("SUNO_USE_SMALL_MODELS", False))


def cached_model_dir(small: bool, precision: str | None = None, providers=None) -> Path:
    precision = precision or machine_precision(providers)
    return cache_root() / f"{HUB_MODELS[small].replace('/', '--')}-{precision}"


def ensure_model(small: bool, precision: str | None = None, progress: bool = True, providers=None,
                 offline: bool = False) -> Path:
    """The cached model directory, exported on first use (precision None: the machine's, see above;
    offline: only from local files)."""
    precision = precision or machine_precision(providers)
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
        # the one way the runtime reaches export code (torch and onnx, the export extra): by name, and
        # only when a missing model must be exported
        export_model = importlib.import_module("bark_onnx.export.exporter").export_model
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


def model_or_default(model: str | Path | None, small: bool = True, progress: bool = True, providers=None,
                     offline: bool = False) -> str | Path:
    """The model to load: `model` as given, or without one the default, suno/bark-small (suno/bark
    with small=False) exported into the cache on first use. Every command and Bark's own
    `preload_models` resolve their model here."""
    if model:
        return model
    return ensure_model(small, progress=progress, providers=providers, offline=offline)
