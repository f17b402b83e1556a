"""Voice presets: find them, load them without pickle, check every array.

A voice is three integer arrays: `semantic_prompt` (n,), `coarse_prompt`
(2, m) and `fine_prompt` (8, m). Presets are looked up, in order, in the model
directory's `voices/`, in an installed `bark` package's `assets/prompts/`, and
on a networked machine in the hub's `suno/bark` speaker embeddings. Voice
files are untrusted input: no pickle, bounded sizes, checked shapes and ranges.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import re
import socket
import zipfile
from pathlib import Path
from typing import Mapping, Union

import numpy as np

from .constants import CODEBOOK_SIZE, N_COARSE_CODEBOOKS, N_FINE_CODEBOOKS, SEMANTIC_VOCAB_SIZE
from .errors import VoiceError

logger = logging.getLogger(__name__)

VOICE_KEYS = ("semantic_prompt", "coarse_prompt", "fine_prompt")
MAX_VOICE_BYTES = 16 * 1024 * 1024  # per array, uncompressed; real presets are ~100 kB
MAX_PROMPT_LEN = 100_000
HUB_REPO = "suno/bark"
_NAME = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)?$")
_SUNO_PRESET = re.compile(r"^(v2/)?[a-z]{2}_speaker_\d$|^announcer$")

Voice = dict[str, np.ndarray]
VoiceLike = Union[str, Path, Mapping[str, np.ndarray], None]

# name -> (rows, upper bound of values); rows None means a 1-D array
_RULES = {
    "semantic_prompt": (None, SEMANTIC_VOCAB_SIZE),
    "coarse_prompt": (N_COARSE_CODEBOOKS, CODEBOOK_SIZE),
    "fine_prompt": (N_FINE_CODEBOOKS, CODEBOOK_SIZE),
}


def validate_voice(arrays: Mapping[str, object], where: str = "voice") -> Voice:
    """Check a voice's three arrays; return int64 copies. Raises VoiceError."""
    missing = [k for k in VOICE_KEYS if k not in arrays]
    if missing:
        raise VoiceError(f"{where}: missing {missing}; a voice needs {list(VOICE_KEYS)}")
    voice: Voice = {}
    for key, (rows, upper) in _RULES.items():
        arr = np.asarray(arrays[key])
        if arr.dtype.kind not in "iu":
            raise VoiceError(f"{where}: {key} must hold integers, got dtype {arr.dtype}")
        want_ndim = 1 if rows is None else 2
        if arr.ndim != want_ndim or (rows is not None and arr.shape[0] != rows):
            shape = "(n,)" if rows is None else f"({rows}, n)"
            raise VoiceError(f"{where}: {key} must have shape {shape}, got {arr.shape}")
        length = arr.shape[-1]
        if length < 1 or length > MAX_PROMPT_LEN:
            raise VoiceError(f"{where}: {key} must hold 1 to {MAX_PROMPT_LEN} steps, got {length}")
        if arr.min() < 0 or arr.max() >= upper:
            raise VoiceError(
                f"{where}: {key} values must lie in [0, {upper}), got [{arr.min()}, {arr.max()}]"
            )
        voice[key] = np.ascontiguousarray(arr, dtype=np.int64)
    return voice


def _check_npy_sizes(path: Path) -> None:
    """Refuse an .npz whose members would inflate past MAX_VOICE_BYTES."""
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.file_size > MAX_VOICE_BYTES:
                    raise VoiceError(f"{path}: member {info.filename} is {info.file_size} bytes, too large for a voice")
    except zipfile.BadZipFile:
        raise VoiceError(f"{path}: not a valid .npz (zip) file") from None


def _load_array(path: Path) -> np.ndarray:
    if path.stat().st_size > MAX_VOICE_BYTES:
        raise VoiceError(f"{path}: {path.stat().st_size} bytes, too large for a voice array")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        raise VoiceError(f"{path}: refused ({err}); voice files must hold plain integer arrays") from None
    except OSError as err:
        raise VoiceError(f"{path}: cannot read it ({err})") from None


def load_voice_file(path: str | Path) -> Voice:
    """Load and check an `.npz` voice file (no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise VoiceError(f"voice file {str(path)!r} does not exist")
    _check_npy_sizes(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k in VOICE_KEYS}
    except ValueError as err:
        raise VoiceError(f"{path}: refused ({err}); voice files must hold plain integer arrays") from None
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise VoiceError(f"{path}: cannot read it as .npz ({err})") from None
    return validate_voice(arrays, str(path))


def load_voice_arrays(files: Mapping[str, Path], where: str) -> Voice:
    """Load a voice stored as three `.npy` files (the Hugging Face layout)."""
    return validate_voice({k: _load_array(Path(p)) for k, p in files.items()}, where)


def bark_package_prompts() -> Path | None:
    """`assets/prompts` of an installed `bark` package (found without importing it)."""
    try:
        spec = importlib.util.find_spec("bark")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        prompts = Path(location) / "assets" / "prompts"
        if prompts.is_dir():
            return prompts
    return None


def _names_in(folder: Path | None) -> list[str]:
    if folder is None or not folder.is_dir():
        return []
    return sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.npz"))


def hub_reachable(host: str = "huggingface.co") -> bool:
    """A quick check before asking the hub: its client retries for ~20 s when offline."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def _from_hub(name: str) -> Voice | None:
    """One of Suno's presets from the hub's suno/bark speaker embeddings (None when unreachable)."""
    if not _SUNO_PRESET.match(name) or not hub_reachable():
        return None
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        return None
    files = {}
    try:
        for key in VOICE_KEYS:
            files[key] = Path(hf_hub_download(HUB_REPO, f"speaker_embeddings/{name}_{key}.npy"))
    except Exception as err:  # offline, unknown name, hub errors: fall through to the caller's error
        logger.debug("voice %s not found on the hub: %s", name, err)
        return None
    return load_voice_arrays(files, f"{HUB_REPO}:{name}")


class VoiceLibrary:
    """Finds voice presets by name for one model directory."""

    def __init__(self, model_voices: Path | None = None, use_hub: bool = True):
        self.model_voices = model_voices
        self.use_hub = use_hub
        self._cache: dict[str, Voice] = {}

    def names(self) -> list[str]:
        """Preset names available without a network."""
        return sorted(set(_names_in(self.model_voices)) | set(_names_in(bark_package_prompts())))

    def sources(self) -> dict[str, str]:
        """Each available preset name and the folder it comes from."""
        found: dict[str, str] = {}
        for folder in (bark_package_prompts(), self.model_voices):
            for name in _names_in(folder):
                found[name] = str(folder)
        return dict(sorted(found.items()))

    def resolve(self, voice: VoiceLike) -> Voice | None:
        """A preset name, an `.npz` path, a dict of three arrays, or None (no voice)."""
        if voice is None:
            return None
        if isinstance(voice, Mapping):
            return validate_voice(voice, "voice dict")
        if not isinstance(voice, (str, Path)):
            raise VoiceError(f"voice must be a preset name, an .npz path or a dict, got {type(voice).__name__}")
        text = str(voice)
        if isinstance(voice, Path) or text.endswith(".npz") or Path(text).is_file():
            return load_voice_file(text)
        if text not in self._cache:
            self._cache[text] = self._find_preset(text)
        return {k: v.copy() for k, v in self._cache[text].items()}

    def _find_preset(self, name: str) -> Voice:
        if not _NAME.match(name):
            raise VoiceError(f"{name!r} is not a voice preset name (like 'v2/en_speaker_6') nor an .npz file")
        for folder in (self.model_voices, bark_package_prompts()):
            if folder is not None and (folder / f"{name}.npz").is_file():
                return load_voice_file(folder / f"{name}.npz")
        voice = _from_hub(name) if self.use_hub else None
        if voice is not None:
            return voice
        own = _names_in(self.model_voices)
        known = self.names()
        close = difflib.get_close_matches(name, known, n=3)
        parts = []
        if close:
            parts.append("did you mean " + " or ".join(repr(c) for c in close) + "?")
        if own:
            parts.append("this model has " + ", ".join(own[:10]) + (" ..." if len(own) > 10 else ""))
        extra = len(set(known) - set(own))
        if extra:
            parts.append(f"{extra} more come from the bark package ('bark-onnx voices' lists them)")
        hint = "; ".join(parts) if known else (
            "no presets are installed: export from a checkpoint that has them, "
            "or 'pip install --no-deps bark==0.1.5' for Suno's 130")
        raise VoiceError(f"unknown voice {name!r}; {hint}. A path to an .npz voice file works too.")
