"""Where models live when no directory is given: exported from the hub on first use.

The cache is `$XDG_CACHE_HOME/bark_onnx` (`~/.cache/bark_onnx` by default).
`suno/bark-small` or `suno/bark` is exported there the first time it is
needed, which takes the export extra (torch) and a network (never used
offline, see hub.py); a user who ran
Suno's Bark before has its `.pt` files in `$XDG_CACHE_HOME/suno/bark_v0`, and
those are exported instead, offline. The precision follows the machine: fp16
where CUDA runs the sessions, int8 on the CPU (see sessions/session.machine_precision).

The runtime holds no export code: whoever asks for a default model (the `say` and
`serve` commands, Suno's `preload_models`) passes an `Exporter`, the export extra's
entry point as bark_onnx/first_use.py hands it down, and it is called only when a
model is missing.

TensorRT's engines and timing caches live here too (`trt/`, see paths.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from ..constants import SUNO_FILES
from ..errors import BarkOnnxError, ModelDirError
from ..sessions.session import machine_precision
from .config import CONFIG_FILE
from .hub import OFFLINE_ENV, is_offline
from .paths import cache_home, cache_root

HUB_MODELS = {True: "suno/bark-small", False: "suno/bark"}
EXPORT_EXTRA = "pip install 'bark-onnx[export]'"


class Exporter(Protocol):
    """Exports a checkpoint (a hub id or a Suno `.pt` file) into a model directory; returns it.
    Raises ImportError when the export extra is not installed."""

    def __call__(self, source: str, target: Path, *, precision: str, progress: bool) -> Path: ...


def suno_use_small() -> bool:
    """Bark's switch: any non-empty SUNO_USE_SMALL_MODELS selects the small models."""
    return bool(os.environ.get("SUNO_USE_SMALL_MODELS", False))


def cached_model_dir(small: bool, precision: str | None = None, providers=None) -> Path:
    precision = precision or machine_precision(providers)
    return cache_root() / f"{HUB_MODELS[small].replace('/', '--')}-{precision}"


def ensure_model(small: bool, precision: str | None = None, progress: bool = True, providers=None,
                 offline: bool = False, exporter: Exporter | None = None) -> Path:
    """The cached model directory, exported on first use by `exporter` (precision None: the
    machine's, see above; offline: only from local files)."""
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
    if exporter is None:
        raise BarkOnnxError(f"no model in {target}, and no exporter was given to make it from {source}: pass a "
                            "model directory made by 'bark-onnx export', or the export extra's exporter "
                            "(bark_onnx.first_use.export_on_first_use)")
    try:
        return exporter(source, target, precision=precision, progress=progress)
    except ImportError:  # torch, onnx or transformers missing
        raise BarkOnnxError(
            f"no model in {target}; exporting {source} there needs the export extra "
            f"({EXPORT_EXTRA}), or pass --model with an exported model directory"
        ) from None
    except BarkOnnxError as err:
        raise ModelDirError(
            f"no model in {target}, and exporting {source} failed: {err}. Point at a local model with "
            "--model DIR (made by 'bark-onnx export --checkpoint LOCAL_CHECKPOINT --out DIR')"
        ) from None


def model_or_default(model: str | Path | None, small: bool = True, progress: bool = True, providers=None,
                     offline: bool = False, exporter: Exporter | None = None) -> str | Path:
    """The model to load: `model` as given, or without one the default, suno/bark-small (suno/bark
    with small=False) exported into the cache on first use by `exporter`. Every command and Bark's
    own `preload_models` resolve their model here."""
    if model:
        return model
    return ensure_model(small, progress=progress, providers=providers, offline=offline, exporter=exporter)
