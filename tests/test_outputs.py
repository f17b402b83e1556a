"""Outputs: written under a temporary name and renamed; the CLI's errors are one line and exit 2."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from bark_onnx.runtime import commands
from bark_onnx.runtime.audio import GrowingWav, read_wav, write_wav
from bark_onnx.cli import main
from bark_onnx.runtime.errors import OutputError, VoiceError

CHUNK = np.linspace(-0.5, 0.5, 960, dtype=np.float32)


def wav_sizes(path) -> tuple[int, int, int]:
    """(RIFF size, data size, file size) as the header and the file say."""
    raw = path.read_bytes()
    return struct.unpack("<I", raw[4:8])[0], struct.unpack("<I", raw[40:44])[0], len(raw)


def old_file(path):
    path.write_bytes(b"the user's old file")
    return path


def test_growing_wav_appears_only_when_committed(tmp_path):
    target = old_file(tmp_path / "out.wav")
    wav = GrowingWav(target)
    wav.append(CHUNK)
    assert target.read_bytes() == b"the user's old file"
    temporary = [p for p in tmp_path.iterdir() if p != target]
    assert len(temporary) == 1 and temporary[0].name.startswith(".out.wav.")
    wav.append(CHUNK)
    wav.commit()
    audio, rate = read_wav(target)
    assert rate == 24_000 and len(audio) == 2 * len(CHUNK)
    assert sorted(tmp_path.iterdir()) == [target]


def test_partial_wav_after_an_interrupted_chunk_has_matching_sizes(tmp_path):
    target = old_file(tmp_path / "out.wav")
    wav = GrowingWav(target)
    wav.append(CHUNK)
    wav.file.write(b"\x01\x02\x03")  # a chunk cut short by Ctrl-C, never counted
    assert wav.keep_partial()
    riff, data, size = wav_sizes(target)
    assert data == 2 * len(CHUNK) and size == 44 + data and riff == size - 8
    assert len(read_wav(target)[0]) == len(CHUNK)


def test_nothing_written_keeps_the_old_file(tmp_path):
    target = old_file(tmp_path / "out.wav")
    assert not GrowingWav(target).keep_partial()
    assert target.read_bytes() == b"the user's old file" and sorted(tmp_path.iterdir()) == [target]


def test_discard_removes_the_temporary_file_and_folders_it_made(tmp_path):
    wav = GrowingWav(tmp_path / "a" / "b" / "out.wav")
    wav.append(CHUNK)
    wav.discard()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["/proc/nope/x.wav", "{tmp}/dir.wav", "{tmp}/file.txt/x.wav", "{tmp}/n\0ul.wav",
                                   "{tmp}/" + "x" * 300 + ".wav"])
def test_unwritable_paths_are_output_errors(where, tmp_path):
    (tmp_path / "dir.wav").mkdir()
    (tmp_path / "file.txt").write_text("a file")
    with pytest.raises(OutputError, match="cannot write"):
        write_wav(where.format(tmp=tmp_path), CHUNK)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.wav", "file.txt"]


def test_permission_refused_is_an_output_error(tmp_path, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(OutputError, match="Permission denied"):
        write_wav(tmp_path / "x.wav", CHUNK)


class FakeBark:
    """Stands in for a loaded model: streams `chunks`, then raises `then` (if any)."""

    sample_rate = 24_000

    def __init__(self, chunks=2, then=None):
        self.chunks, self.then = chunks, then

    def _run(self):
        for _ in range(self.chunks):
            yield CHUNK
        if self.then is not None:
            raise self.then

    def submit(self, request):
        return FakeJob(self._run())


class FakeJob:
    """Its chunks when iterated, or all of them as the result's audio."""

    def __init__(self, chunks):
        self.chunks = chunks

    def __iter__(self):
        return self.chunks

    def result(self):
        return SimpleNamespace(audio=np.concatenate(list(self.chunks)))

    def cancel(self) -> None:
        pass


@pytest.fixture
def fake_model(monkeypatch):
    loads = []

    def use(bark):
        monkeypatch.setattr(commands, "_load", lambda *args: loads.append(args) or bark)
        return loads

    return use


def say(tmp_path, *args):
    return main(["say", "hello", "--model", str(tmp_path), "--silent", *args])


def test_ctrl_c_while_streaming_keeps_the_valid_partial_wav(fake_model, tmp_path, capsys):
    target = old_file(tmp_path / "out.wav")
    fake_model(FakeBark(chunks=3, then=KeyboardInterrupt()))
    assert say(tmp_path, "--stream", "--out", str(target)) == 130
    riff, data, size = wav_sizes(target)
    assert data == 3 * 2 * len(CHUNK) and size == 44 + data and riff == size - 8
    assert "kept the 0.1 s made so far" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("stream", [True, False])
def test_an_error_while_generating_leaves_the_old_file_untouched(stream, fake_model, tmp_path, capsys):
    target = old_file(tmp_path / "out.wav")
    fake_model(FakeBark(chunks=2, then=VoiceError("bad voice")))
    assert say(tmp_path, "--out", str(target), *(["--stream"] if stream else [])) == 2
    assert target.read_bytes() == b"the user's old file" and sorted(tmp_path.iterdir()) == [target]
    assert capsys.readouterr().err == "bark-onnx: error: bad voice\n"


def test_ctrl_c_before_any_audio_leaves_the_old_file(fake_model, tmp_path):
    target = old_file(tmp_path / "out.wav")
    fake_model(FakeBark(chunks=0, then=KeyboardInterrupt()))
    assert say(tmp_path, "--out", str(target)) == 130
    assert target.read_bytes() == b"the user's old file" and sorted(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("out", ["/proc/nope/x.wav", "{tmp}/dir.wav", "{tmp}/file.txt/x.wav"])
def test_bad_output_paths_fail_before_generating(out, fake_model, tmp_path, capsys):
    (tmp_path / "dir.wav").mkdir()
    (tmp_path / "file.txt").write_text("a file")
    loads = fake_model(FakeBark())
    assert say(tmp_path, "--out", out.format(tmp=tmp_path)) == 2
    err = capsys.readouterr().err
    assert loads == [] and err.startswith("bark-onnx: error: cannot write") and err.count("\n") == 1


@pytest.mark.parametrize("args,message", [
    (["--seed", "-1"], "'-1' is not a non-negative integer"),
    (["--seed", "1.5"], "'1.5' is not a non-negative integer"),
    (["--text-temp", "nan"], "'nan' is not a temperature"),
    (["--waveform-temp", "-0.5"], "'-0.5' is not a temperature"),
    (["--threads", "0"], "'0' is not a positive number of threads"),
])
def test_bad_arguments_exit_2_with_one_line(args, message, fake_model, tmp_path, capsys):
    loads = fake_model(FakeBark())
    with pytest.raises(SystemExit) as stop:
        say(tmp_path, "--out", str(tmp_path / "x.wav"), *args)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err and err.count("\n") == 1
    assert loads == [] and list(tmp_path.iterdir()) == []


def test_a_closed_pipe_ends_quietly_with_exit_2(model_dirs):
    proc = subprocess.Popen(
        [sys.executable, "-m", "bark_onnx.cli", "say", "hello world", "--model", str(model_dirs["suno-tiny"]),
         "--stream", "--out", "-", "--silent", "--seed", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    # like `| head -c 10`; the stream (~700 kB on the tiny model: it never samples EOS) outgrows the
    # pipe's buffer, so the writer is still writing when the pipe closes
    assert len(proc.stdout.read(10)) == 10
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 2
    assert err == "bark-onnx: error: the output pipe was closed; stopped\n"


def test_voices_of_an_unusable_model_path_is_one_line(capsys):
    assert main(["voices", "--model", "m" * 300]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bark-onnx: error: cannot list the voices") and err.count("\n") == 1
