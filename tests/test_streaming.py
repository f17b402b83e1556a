"""Streaming, long text and batches."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from bark_onnx import InputError
from bark_onnx.runtime.audio import read_wav
from bark_onnx.runtime.stages.longform import split_text


def _drain(job):
    """Chunks of a stream and its generation as a voice prompt."""
    chunks = list(job)
    return chunks, job.result().prompt


def test_stream_starts_early_and_matches_one_shot_tokens(tts):
    t = tts["suno-tiny"]
    full, audio = t.generate("hello world", voice="announcer", seed=3, silent=True, output_full=True)
    chunks, prompt = _drain(t.stream("hello world", voice="announcer", seed=3))
    streamed = np.concatenate(chunks)
    assert len(chunks) >= 4 and len(chunks[0]) < len(streamed) / 8  # the first audio comes early
    assert all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)
    assert len(streamed) == len(audio)
    np.testing.assert_array_equal(prompt["semantic_prompt"], full["semantic_prompt"])
    np.testing.assert_array_equal(prompt["coarse_prompt"], full["coarse_prompt"])


def _joins(chunks):
    return np.cumsum([len(c) for c in chunks])[:-1]


def test_stream_joins_have_no_clicks(tts):
    t = tts["hf-mini"]
    chunks, _ = _drain(t.stream("hello world", seed=1))
    audio = np.concatenate(chunks)
    steps = np.abs(np.diff(audio))
    for j in _joins(chunks):
        nearby = np.concatenate([steps[max(0, j - 2400): j - 2], steps[j + 1: j + 2400]])
        assert steps[j - 1] <= nearby.max(), f"click at sample {j}"


def test_stream_difference_from_one_shot_is_small(tts):
    """Greedy fine decoding on both sides isolates what chunking changes."""
    t = tts["suno-tiny"]
    full, audio = t.generate("hello world", seed=5, silent=True, output_full=True, fine_temperature=None)
    chunks, prompt = _drain(t.stream("hello world", seed=5, fine_temperature=None))
    streamed = np.concatenate(chunks)
    np.testing.assert_array_equal(prompt["fine_prompt"][:2], full["fine_prompt"][:2])  # the coarse codebooks
    # Codebooks 2-7 see less context in a chunk; a random-weight model's flat logits make its
    # argmax sensitive to that (chance agreement would be 1/1024).
    agreement = np.mean(prompt["fine_prompt"][2:] == full["fine_prompt"][2:])
    snr_db = 10 * np.log10(np.mean(audio ** 2) / np.mean((streamed - audio) ** 2))
    assert agreement > 0.1 and snr_db > 10, (agreement, snr_db)


LONG_TEXT_RUN = """
import sys
from bark_onnx import Bark

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

tts = Bark.load(sys.argv[1])
text = " ".join([sys.argv[2]] * 16)
seconds, rss = 0.0, []
for chunk in tts.stream(text, voice="v2/en_speaker_1", long=True, history="voice", seed=0, pause_s=0.25):
    seconds += len(chunk) / tts.sample_rate
    if chunk.size and not chunk.any():  # a pause: a segment has ended
        rss.append(rss_mb())
print(seconds, *rss)
"""


@pytest.mark.slow
def test_long_text_two_minutes_voice_kept_memory_flat(model_dirs):
    """Measured in a process of its own: its current resident memory after each segment."""
    sentence = "This is a fairly ordinary sentence about nothing in particular, spoken at an easy pace."
    segments = split_text(" ".join([sentence] * 16))  # ~240 words
    assert len(segments) >= 8
    proc = subprocess.run([sys.executable, "-c", LONG_TEXT_RUN, str(model_dirs["suno-tiny"]), sentence],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    seconds, *rss = map(float, proc.stdout.split())
    assert seconds >= 120
    assert len(rss) == len(segments) - 1
    assert rss[-1] - rss[1] < 64, rss  # MB: flat after the first segments


@pytest.mark.slow
def test_long_text_continues_from_previous_segment(tts):
    t = tts["hf-mini"]
    audio = t.generate("One. Two three. " * 3, long=True, history="previous", max_words=4, seed=1, silent=True,
                            pause_s=0.1)
    assert audio.dtype == np.float32 and audio.size > 0


def test_split_text_boundaries():
    assert split_text("One. Two! Three?", max_words=2) == ["One. Two!", "Three?"]
    parts = split_text("a, b, c, d, e, f", max_words=2)
    assert parts == ["a, b,", "c, d,", "e, f"]
    no_boundary = split_text(" ".join(["word"] * 95))
    assert [len(p.split()) for p in no_boundary] == [30, 30, 30, 5]
    assert all(len(p) <= 60 for p in split_text("長" * 150))


@pytest.mark.parametrize("call,kwargs", [
    ("generate", dict(text=[])),
    ("generate", dict(text=["fine", " "])),
    ("stream", dict(text="")),
    ("stream", dict(text=["a", "b"])),
    ("stream", dict(text="   ", long=True)),
    ("stream", dict(text="hi", long=True, history="nope")),
    ("generate", dict(text="hi", long=True, max_words=0)),
    ("generate", dict(text="hi", pause_s=0.5)),  # long text's settings without long
    ("generate", dict(text="hi", long="yes")),
])
def test_bad_input_to_new_calls(call, kwargs, tts):
    """Refused when called, before any work: a generator never starts on bad input."""
    with pytest.raises(InputError):
        getattr(tts["suno-tiny"], call)(silent=True, **kwargs)


@pytest.mark.slow
def test_cli_stream_to_a_growing_wav_and_to_stdout(model_dirs, tmp_path):
    out = tmp_path / "s.wav"
    base = [sys.executable, "-m", "bark_onnx.cli", "say", "hello", "--model", str(model_dirs["suno-tiny"]),
            "--seed", "2", "--silent", "--stream"]
    proc = subprocess.run(base + ["--out", str(out)], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    audio, rate = read_wav(out)
    assert rate == 24_000 and len(audio) % 320 == 0 and len(audio) > 0
    proc = subprocess.run(base + ["--out", "-"], capture_output=True, timeout=300)
    assert proc.returncode == 0
    pcm = np.frombuffer(proc.stdout, dtype="<i2").astype(np.float32) / 32767
    np.testing.assert_array_equal(pcm, audio)
    proc = subprocess.run(base[:-1] + ["--out", "-"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "needs --stream" in proc.stderr


