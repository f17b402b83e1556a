"""WAV output: 16-bit PCM mono at 24 kHz, written under a temporary name and renamed when complete.

A file the user names is only ever replaced by a complete, well-formed WAV:
audio goes to a temporary file beside the target (same folder, so the rename
is atomic), whose header sizes follow the data after every chunk, and is
renamed into place at the end. A failed write leaves nothing behind.
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
import wave
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .constants import SAMPLE_RATE
from .errors import OutputError
from .files import umask

HEADER_BYTES = 44


def to_pcm16(audio: np.ndarray) -> bytes:
    """float audio in [-1, 1] -> little-endian int16 bytes (clipped)."""
    clipped = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    return (clipped * 32767.0).round().astype("<i2").tobytes()


def _output_error(path: Path, err: BaseException) -> OutputError:
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return OutputError(f"cannot write {str(path)!r} ({reason}); choose another --out path or folder")


def _make_parents(folder: Path) -> list[Path]:
    """Create the missing folders above a file; returns those made (to remove them again on failure)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir()
    return missing


def wav_header(sample_rate: int, data_bytes: int | None) -> bytes:
    """The 44-byte header of 16-bit mono PCM WAV; `data_bytes` None: sizes that say "unknown, read to the
    end" (a stream whose length is not known when it starts)."""
    unknown = 0xFFFFFFFF
    riff = unknown if data_bytes is None else 36 + data_bytes
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
            + b"data" + struct.pack("<I", unknown if data_bytes is None else data_bytes))


class GrowingWav:
    """A WAV written in chunks under a temporary name beside `path`; `commit()` renames it into place.

    The temporary file is valid after every chunk (its header sizes follow the data).
    `keep_partial()` commits what was written (for Ctrl-C), `discard()` removes it.
    Opening checks the destination, so a bad path fails before any audio is made.
    """

    def __init__(self, path: str | Path, sample_rate: int = SAMPLE_RATE):
        self.path = Path(path)
        self.rate = sample_rate
        self.n_bytes = 0
        self._made: list[Path] = []
        self._tmp: Path | None = None
        try:
            if self.path.is_dir():
                raise IsADirectoryError(21, "it is a directory")
            self._made = _make_parents(self.path.parent)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            self._tmp = Path(tmp)
            self.file = os.fdopen(fd, "w+b")
            self._write_header()
        except (OSError, ValueError) as err:  # ValueError: a NUL in the path
            self.discard()
            raise _output_error(self.path, err) from None

    @property
    def n_samples(self) -> int:
        return self.n_bytes // 2

    def _write_header(self) -> None:
        self.file.seek(0)
        self.file.write(wav_header(self.rate, self.n_bytes))

    def append(self, audio: np.ndarray) -> None:
        data = to_pcm16(audio)
        try:
            self.file.seek(HEADER_BYTES + self.n_bytes)
            self.file.write(data)
            self.n_bytes += len(data)
            self._write_header()
            self.file.flush()
        except OSError as err:  # a full disk, a vanished folder
            self.discard()
            raise _output_error(self.path, err) from None

    def commit(self) -> Path:
        """Fix the header to the samples written, then rename the file into place."""
        try:
            self.file.truncate(HEADER_BYTES + self.n_bytes)  # drops a chunk cut short by Ctrl-C
            self._write_header()
            self.file.close()
            os.chmod(self._tmp, 0o666 & ~umask())
            os.replace(self._tmp, self.path)
        except OSError as err:
            self.discard()
            raise _output_error(self.path, err) from None
        self._tmp = None
        return self.path

    def keep_partial(self) -> bool:
        """After an interruption: put what was written into place (a valid, shorter WAV), unless
        it holds no audio, in which case an older file there stays as it was. True when kept."""
        if self._tmp is None or self.n_samples == 0:
            self.discard()
            return False
        self.commit()
        return True

    def discard(self) -> None:
        """Remove the temporary file and any folder made for it; the target is untouched."""
        if getattr(self, "file", None) is not None:
            self.file.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None
        for folder in self._made:
            try:
                folder.rmdir()
            except OSError:
                break
        self._made = []


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write `audio` atomically: a failure leaves no partial file at `path`. Raises OutputError."""
    wav = GrowingWav(path, sample_rate)
    try:
        wav.append(audio)
    except BaseException:
        wav.discard()
        raise
    return wav.commit()


def write_pcm(stream: BinaryIO | None, audio: np.ndarray) -> None:
    """Raw 16-bit little-endian PCM (24 kHz mono) to a binary stream, stdout by default."""
    out = stream or sys.stdout.buffer
    out.write(to_pcm16(audio))
    out.flush()


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """16-bit PCM WAV -> (float32 audio, sample rate)."""
    with wave.open(str(path), "rb") as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return data.astype(np.float32) / 32767.0, w.getframerate()
