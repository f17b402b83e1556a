"""Reading weight files safely: PyTorch pickles (no arbitrary code), safetensors, shards, JSON, hub snapshots."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bark_onnx.runtime.errors import CheckpointError

logger = logging.getLogger(__name__)

HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")

# Safe unpickling of Suno's .pt files: tensors plus the numpy scalars they hold.
_NUMPY_GLOBALS = [np.dtype, np.ndarray, type(np.dtype(np.float64)), type(np.dtype(np.int64))]
try:
    _NUMPY_GLOBALS.append(np._core.multiarray.scalar)  # numpy >= 2
except AttributeError:  # pragma: no cover - numpy 1.x
    _NUMPY_GLOBALS.append(np.core.multiarray.scalar)


def torch_load(path: Path) -> Any:
    """torch.load without arbitrary code: tensors, containers and numpy scalars only."""
    try:
        with torch.serialization.safe_globals(_NUMPY_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as err:  # pickle errors, truncated zips, foreign formats
        raise CheckpointError(f"{path}: cannot read it as a PyTorch checkpoint ({type(err).__name__}: {err})") from None


def load_weight_file(path: Path) -> dict[str, torch.Tensor]:
    if path.name.endswith(".index.json"):
        try:
            index = json.loads(path.read_text())
            shards = sorted(set(index["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{path}: not a valid shard index ({err})") from None
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_weight_file(path.parent / shard))
        return state
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise CheckpointError(f"{path}: cannot read it as safetensors ({err})") from None
    state = torch_load(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state["state_dict"] if "state_dict" in state else state


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot read it as JSON ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def looks_like_hub_id(text: str) -> bool:
    return bool(re.match(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$", text)) and not text.startswith((".", "/"))


def hub_snapshot(repo_id: str, patterns: list[str], required: bool = True) -> Path | None:
    """Download (or find in the cache) a hub repository; None or an error when unreachable."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        if required:
            raise CheckpointError("huggingface_hub is needed for hub ids: pip install 'bark-onnx[export]'") from None
        return None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as err:
        if required:
            raise CheckpointError(
                f"cannot fetch {repo_id!r} from the Hugging Face hub ({type(err).__name__}); on a machine "
                "without network, download it elsewhere and pass --checkpoint with the local directory"
            ) from None
        logger.debug("hub %s unavailable: %s", repo_id, err)
        return None


def find_hf_weights(root: Path) -> Path:
    for name in HF_WEIGHT_FILES:
        if (root / name).is_file():
            return root / name
    raise CheckpointError(f"{root}: no weights file (one of {', '.join(HF_WEIGHT_FILES)})")
