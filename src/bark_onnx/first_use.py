"""The exporter that the commands and Suno's functions hand the runtime, for a model missing on first use.

The runtime never imports export code (torch and onnx, the export extra): runtime/model/cache.py
takes an exporter as an argument and calls it only when the default model is not in the cache.
This is that exporter. It sits above both layers, beside the two that pass it down: the command
line (cli.py, for `say` and `serve`) and Suno's functions (compat.py); it imports export only
when called.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def export_on_first_use(source: str, target: Path, *, precision: str, progress: bool) -> Path:
    """Export `source` (a hub id or a Suno `.pt` file) into `target`; ImportError without the export extra."""
    from .export.exporter import export_model

    logger.warning("first use: exporting %s to %s", source, target)
    return export_model(source, target, precision=precision, progress=progress)
