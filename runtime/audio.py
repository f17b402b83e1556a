"""WAV output: 16-bit PCM mono at 24 kHz, written under a temporary name and renamed when complete."""

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


def to_pcm16(audio: np.ndarray) -> bytes:
    """float audio in [-1, 1] -> little-endian int16 bytes (clipped)."""
    clipped = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    return (clipped * 32767.0).round().astype("<i2").tobytes()


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write `audio` atomically: a failure leaves no partial file at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f, wave.open(f, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sample_rate)
            w.writeframes(to_pcm16(audio))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class GrowingWav:
    """A WAV file that is valid after every chunk: the sizes in its header follow the data.

    For streaming, so a player can open the file while it grows. A stream that
    fails is removed (`discard`), so no partial file stays behind.
    """

    def __init__(self, path: str | Path, sample_rate: int = SAMPLE_RATE):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "wb")
        self.rate = sample_rate
        self.n_bytes = 0
        self._write_header()

    def _write_header(self) -> None:
        self.file.seek(0)
        self.file.write(b"RIFF" + struct.pack("<I", 36 + self.n_bytes) + b"WAVE")
        self.file.write(b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, self.rate, self.rate * 2, 2, 16))
        self.file.write(b"data" + struct.pack("<I", self.n_bytes))

    def append(self, audio: np.ndarray) -> None:
        data = to_pcm16(audio)
        self.file.seek(0, os.SEEK_END)
        self.file.write(data)
        self.n_bytes += len(data)
        self._write_header()
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def discard(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
