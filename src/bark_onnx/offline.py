"""Whether bark-onnx may use the network.

Offline, nothing is looked up on a network: voices come from local files only
and a missing model is an error instead of a download. Asked for with
`Bark.load(..., offline=True)`, `bark-onnx say --offline`, or the environment:
BARK_ONNX_OFFLINE=1 (HF_HUB_OFFLINE=1, the Hugging Face switch, counts too).
"""

from __future__ import annotations

import os

OFFLINE_ENV = "BARK_ONNX_OFFLINE"
_ENV_NAMES = (OFFLINE_ENV, "HF_HUB_OFFLINE")
_TRUE = ("1", "true", "yes", "on")


def is_offline(offline: bool = False) -> bool:
    """True when the caller asks for it or the environment does (either one suffices)."""
    if offline:
        return True
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in _ENV_NAMES)
