"""Voice files are untrusted input: read them without pickle and without trusting their headers.

An `.npz` voice is a zip of `.npy` arrays. Each member's `.npy` header (dtype
and shape) is read first and the array's size (shape x itemsize) checked
before anything is allocated, so a header that claims 2^40 elements is
refused, not allocated. Names and paths are checked (NUL, characters a file
name cannot hold, length) before the file system is asked about them.
"""

from __future__ import annotations

import lzma
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Iterable

import numpy as np
from numpy.lib import format as npy_format

from ..errors import VoiceError

MAX_VOICE_BYTES = 16 * 1024 * 1024  # per array; Suno's presets are ~100 kB
MAX_PATH_BYTES = 4096  # Linux PATH_MAX
MAX_NAME_BYTES = 255  # one path component, NAME_MAX
_HEADER_ROOM = 64 * 1024  # an .npy header is at most a few kB

# What a corrupt or hostile file can make the zip and .npy readers raise: zipfile
# raises RuntimeError for encrypted members and NotImplementedError for unknown
# compression; the header parser raises ValueError, SyntaxError or TypeError.
_BAD_FILE = (OSError, EOFError, ValueError, TypeError, OverflowError, SyntaxError, NotImplementedError,
             RuntimeError, zipfile.BadZipFile, zlib.error, struct.error, lzma.LZMAError)


def shorten(text: str, limit: int = 60) -> str:
    """repr(text), cut to about `limit` characters for an error message."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def check_path_text(text: str, what: str = "voice") -> None:
    """Refuse a name or path the file system cannot take, before asking the file system about it."""
    if "\0" in text:
        raise VoiceError(f"{what} {shorten(text)} contains a NUL character; give a preset name or an .npz path")
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:
        raise VoiceError(f"{what} {shorten(text)} holds characters no file name can (a lone surrogate?); "
                         "give a preset name or an .npz path") from None
    if len(raw) > MAX_PATH_BYTES or any(len(part) > MAX_NAME_BYTES for part in raw.split(b"/")):
        raise VoiceError(f"{what} {shorten(text)} is too long for a preset name or a file path "
                         f"(at most {MAX_NAME_BYTES} bytes a name, {MAX_PATH_BYTES} a path)")


def is_file(path: Path) -> bool:
    """Path.is_file, with the file system's refusals (permissions, ...) as VoiceError."""
    try:
        return path.is_file()
    except OSError as err:
        raise VoiceError(f"cannot read voice file {shorten(str(path))} ({err.strerror or err})") from None


def read_npy(f: BinaryIO, where: str) -> np.ndarray:
    """One integer array from an open .npy stream; its size is checked from the header before reading."""
    version = npy_format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = npy_format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = npy_format.read_array_header_2_0(f)
    else:
        raise VoiceError(f"{where}: .npy format version {version} is not supported; save voices with numpy.savez")
    if dtype.hasobject or dtype.kind not in "iu":
        raise VoiceError(f"{where}: refused (dtype {dtype}); voice files must hold plain integer arrays, no pickle")
    if len(shape) > 2:
        raise VoiceError(f"{where}: a voice array has 1 or 2 dimensions, this one claims shape {shape}")
    n_bytes = math.prod(shape) * dtype.itemsize
    if n_bytes > MAX_VOICE_BYTES:
        raise VoiceError(f"{where}: its header claims {n_bytes} bytes (shape {shape}, {dtype}), too large "
                         f"for a voice (at most {MAX_VOICE_BYTES})")
    data = f.read(n_bytes)
    if len(data) != n_bytes:
        raise VoiceError(f"{where}: truncated ({len(data)} of {n_bytes} bytes); save the voice again")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _read_member(zf: zipfile.ZipFile, name: str, where: str) -> np.ndarray:
    info = zf.getinfo(name)
    if info.file_size > MAX_VOICE_BYTES + _HEADER_ROOM:
        raise VoiceError(f"{where}: member {name} is {info.file_size} bytes, too large for a voice")
    with zf.open(info) as f:
        return read_npy(f, f"{where}: {name}")


def read_npz(path: Path, keys: Iterable[str]) -> dict[str, np.ndarray]:
    """The arrays `keys` that an .npz file holds (missing ones are left out for the caller to name)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            return {k: _read_member(zf, f"{k}.npy", str(path)) for k in keys if f"{k}.npy" in names}
    except zipfile.BadZipFile:
        raise VoiceError(f"{path}: not a valid .npz (zip) file; save voices with numpy.savez") from None
    except _BAD_FILE as err:
        raise VoiceError(f"{path}: cannot read it as an .npz voice ({type(err).__name__}: {err})") from None


def read_npy_file(path: Path) -> np.ndarray:
    """One array from an .npy file (the Hugging Face layout keeps each voice array in its own file)."""
    try:
        with open(path, "rb") as f:
            return read_npy(f, str(path))
    except _BAD_FILE as err:
        raise VoiceError(f"{path}: cannot read it as an .npy array ({type(err).__name__}: {err})") from None
