"""Audio on the wire: 16-bit PCM and streamed WAV as chunks arrive; FLAC, MP3 and Opus once complete.

pcm is OpenAI's: 16-bit signed little-endian, 24 kHz, mono, no header. A
streamed WAV cannot know its size when its header goes out, so it uses the
streaming convention: 0xFFFFFFFF in the RIFF and data sizes, read by players
and decoders as "until the end of the stream". FLAC, MP3 and Opus (in Ogg) are
encoded by libsndfile (the soundfile wheel bundles it) when the audio is done.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np

from ..runtime.audio import to_pcm16, wav_header

MEDIA_TYPES = {
    "pcm": "audio/pcm",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
}
_SOUNDFILE = {"flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS"),
              "wav": ("WAV", "PCM_16")}


def wav_stream_header(sample_rate: int) -> bytes:
    """A 16-bit mono PCM WAV header whose sizes say "unknown, read to the end"."""
    return wav_header(sample_rate, None)


class StreamEncoder:
    """Bytes for a streamed format: a start (the WAV header), then each chunk as PCM."""

    def __init__(self, format: str, sample_rate: int):
        self.format, self.sample_rate = format, sample_rate

    def start(self) -> bytes:
        return wav_stream_header(self.sample_rate) if self.format == "wav" else b""

    @staticmethod
    def chunk(audio: np.ndarray) -> bytes:
        return to_pcm16(audio)


def encode_whole(audio: np.ndarray, format: str, sample_rate: int) -> bytes:
    """Complete audio as one file of `format` (flac, mp3, opus or wav); pcm is the raw samples."""
    if format == "pcm":
        return to_pcm16(audio)
    import soundfile  # the serve extra; imported here so the streamed formats never need it

    kind, subtype = _SOUNDFILE[format]
    samples = np.frombuffer(to_pcm16(audio), "<i2")  # the same 16-bit samples as pcm, whatever the format
    if samples.size == 0 and format in ("mp3", "opus"):
        samples = np.zeros(1, samples.dtype)  # their encoders write no valid file for zero samples
    out = io.BytesIO()
    soundfile.write(out, samples, sample_rate, format=kind, subtype=subtype)
    return out.getvalue()


def sse_delta(data: bytes) -> bytes:
    """One Server-Sent Event carrying audio bytes, as OpenAI streams speech."""
    return sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")})


def sse_event(event: dict) -> bytes:
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
