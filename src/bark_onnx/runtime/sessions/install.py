"""Which ONNX Runtime is installed: one of `onnxruntime` (CPU) and `onnxruntime-gpu`, never neither.

Both packages install the same `onnxruntime` module, so bark-onnx depends on
neither and offers them as the `cpu` and `gpu` extras. Checked before the
module is first imported, so that a missing or doubly installed runtime gets
a sentence that says what to install rather than an import traceback.
"""

from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

PACKAGES = ("onnxruntime", "onnxruntime-gpu")
INSTALL_HINT = ("pip install 'bark-onnx[cpu]' (CPU) or 'bark-onnx[gpu]' (NVIDIA GPU, CUDA 13 and cuDNN 9 "
                "included); from a checkout: pip install '.[cpu]' or '.[gpu]'")


def _location(package: str) -> Path | None:
    """The folder a distribution is installed in, or None when it is not installed."""
    try:
        return Path(metadata.distribution(package).locate_file("")).resolve()
    except metadata.PackageNotFoundError:
        return None


def check_onnxruntime() -> None:
    """Raise ImportError naming both extras when no ONNX Runtime is installed; warn when both share a folder."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise ImportError(f"bark-onnx needs ONNX Runtime, and none is installed: {INSTALL_HINT}")
    places = [_location(p) for p in PACKAGES]
    # In separate folders (a GPU build on PYTHONPATH before the CPU one) the first one found shadows
    # the other; in one folder they overwrite each other's files and the module may be either or broken.
    if places[0] is not None and places[0] == places[1]:
        logger.warning("onnxruntime and onnxruntime-gpu are both installed in %s and overwrite each other's "
                       "files; keep one: pip uninstall -y onnxruntime onnxruntime-gpu, then %s",
                       places[0], INSTALL_HINT)
