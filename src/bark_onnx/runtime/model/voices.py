"""Voice presets: find them, load them without pickle, check every array.

A voice is three integer arrays: `semantic_prompt` (n,), `coarse_prompt`
(2, m) and `fine_prompt` (8, m). Presets are looked up, in order, in the model
directory's `voices/`, in an installed `bark` package's `assets/prompts/`, and
on a networked machine (not offline, see hub.py) in the hub's `suno/bark`
speaker embeddings. Voice files are untrusted input (voice_files.py): no
pickle, bounded sizes, checked shapes and ranges.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import re
import socket
from pathlib import Path
from typing import Mapping, Union

import numpy as np

from ..constants import CODEBOOK_SIZE, N_COARSE_CODEBOOKS, N_FINE_CODEBOOKS, SEMANTIC_VOCAB_SIZE
from ..errors import VoiceError
from .hub import is_offline
from .voice_files import check_path_text, is_file, read_npy_file, read_npz, shorten

logger = logging.getLogger(__name__)

VOICE_KEYS = ("semantic_prompt", "coarse_prompt", "fine_prompt")
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
        try:
            arr = np.asarray(arrays[key])
        except (ValueError, TypeError, OverflowError) as err:  # ragged lists, unconvertible objects
            raise VoiceError(f"{where}: {key} is not an integer array ({err})") from None
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


def load_voice_file(path: str | Path) -> Voice:
    """Load and check an `.npz` voice file (no pickle, sizes checked before anything is read)."""
    text = os.fspath(path)
    check_path_text(text, "voice file")
    path = Path(text)
    if not is_file(path):
        raise VoiceError(f"voice file {shorten(text)} does not exist")
    return validate_voice(read_npz(path, VOICE_KEYS), str(path))


def load_voice_arrays(files: Mapping[str, Path], where: str) -> Voice:
    """Load a voice stored as three `.npy` files (the Hugging Face layout)."""
    return validate_voice({k: read_npy_file(Path(p)) for k, p in files.items()}, where)


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
    try:
        if folder is None or not folder.is_dir():
            return []
        return sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.npz"))
    except OSError as err:  # a path too long, a folder we may not read
        raise VoiceError(f"cannot list the voices in {shorten(str(folder))} ({err.strerror or err})") from None


def hub_reachable(host: str = "huggingface.co") -> bool:
    """A quick check before asking the hub: its client retries for ~20 s when offline."""
    if is_offline():
        return False
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def _hub_voice(name: str) -> Voice | None:
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
    """Finds voice presets by name for one model directory.

    use_hub=False (or offline, see hub.py) keeps lookups local. A name the
    hub did not have is remembered, so it is asked once per library, not per call.
    """

    def __init__(self, model_voices: Path | None = None, use_hub: bool = True):
        self.model_voices = model_voices
        self.use_hub = use_hub
        self._cache: dict[str, Voice] = {}
        self._hub_misses: set[str] = set()

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
        text = os.fspath(voice)
        check_path_text(text)  # before the file system sees it: NUL, surrogates, 300-character names
        if isinstance(voice, Path) or text.endswith(".npz") or is_file(Path(text)):
            return load_voice_file(text)
        if text not in self._cache:
            self._cache[text] = self._find_preset(text)
        return {k: v.copy() for k, v in self._cache[text].items()}

    def _find_preset(self, name: str) -> Voice:
        if not _NAME.match(name):
            raise VoiceError(f"{shorten(name)} is not a voice preset name (like 'v2/en_speaker_6') nor an .npz file")
        for folder in (self.model_voices, bark_package_prompts()):
            if folder is not None and is_file(folder / f"{name}.npz"):
                return load_voice_file(folder / f"{name}.npz")
        voice = self._from_hub(name)
        if voice is not None:
            return voice
        raise VoiceError(f"unknown voice {name!r}; {self._hint(name)}. A path to an .npz voice file works too.")

    def _from_hub(self, name: str) -> Voice | None:
        if not self.use_hub or is_offline() or name in self._hub_misses:
            return None
        voice = _hub_voice(name)
        if voice is None:
            self._hub_misses.add(name)
        return voice

    def _hint(self, name: str) -> str:
        """What to say about an unknown preset: close names, this model's presets, where more come from."""
        own = _names_in(self.model_voices)
        known = self.names()
        if not known:
            return ("no presets are installed: export from a checkpoint that has them, "
                    "or 'pip install --no-deps bark==0.1.5' for Suno's 130")
        parts = []
        close = difflib.get_close_matches(name, known, n=3)
        if close:
            parts.append("did you mean " + " or ".join(repr(c) for c in close) + "?")
        if own:
            parts.append("this model has " + ", ".join(own[:10]) + (" ..." if len(own) > 10 else ""))
        extra = len(set(known) - set(own))
        if extra:
            parts.append(f"{extra} more come from the bark package ('bark-onnx voices' lists them)")
        return "; ".join(parts)
