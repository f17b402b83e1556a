"""Model directories by path, or by Hugging Face hub id ("org/name"), as ONNX voice models ship;
and whether bark-onnx may use the network at all.

A hub id is fetched once into the Hugging Face cache (huggingface_hub's
`snapshot_download`, which resumes and verifies) and read from there after.
Offline, nothing is looked up on a network: voices come from local files only,
a hub id only from the cache, and a missing model is an error instead of a
download. Asked for with `Bark.load(..., offline=True)`, `--offline`, or the
environment: BARK_ONNX_OFFLINE=1 (HF_HUB_OFFLINE=1, the Hugging Face switch,
counts too).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ModelDirError

OFFLINE_ENV = "BARK_ONNX_OFFLINE"
_ENV_NAMES = (OFFLINE_ENV, "HF_HUB_OFFLINE")
_TRUE = ("1", "true", "yes", "on")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")


def is_offline(offline: bool = False) -> bool:
    """True when the caller asks for it or the environment does (either one suffices)."""
    if offline:
        return True
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in _ENV_NAMES)


def is_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and ".." not in text


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def resolve_model_dir(model: str | Path, offline: bool = False) -> Path:
    """A local directory as it is; "org/name" that is not a local path from the hub (or its cache)."""
    if not isinstance(model, (str, Path)):
        raise ModelDirError(f"model must be a directory or a hub id like 'org/name', got {type(model).__name__}")
    path = Path(model).expanduser()
    if isinstance(model, Path) or _exists(path) or not is_hub_id(str(model)):
        return path  # a missing local directory gets ModelConfig's error, which says how to make one
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ModelDirError(f"{model!r} is not a local directory, and loading it from the hub needs "
                            "huggingface_hub: pip install huggingface_hub") from None
    local_only = is_offline(offline)
    try:
        return Path(snapshot_download(repo_id=str(model), local_files_only=local_only))
    except Exception as err:  # the hub client raises many types (offline, 404, auth, disk)
        how = ("it is not in the Hugging Face cache and this load is offline: fetch it on a networked machine "
               f"('huggingface-cli download {model}') or pass a local directory") if local_only else \
            "check the id and the network, or pass a local directory made by 'bark-onnx export'"
        raise ModelDirError(f"cannot load {model!r} from the Hugging Face hub ({type(err).__name__}): {how}") \
            from None
