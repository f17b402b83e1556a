"""The command line: say, voices, errors with a non-zero exit and no partial WAV; no torch at run time."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bark_onnx.runtime.audio import read_wav


def run_cli(*args, env=None, timeout=300):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "bark_onnx.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def test_say_writes_a_24khz_wav(model_dirs, tmp_path):
    out = tmp_path / "hello.wav"
    proc = run_cli("say", "Hello world [laughs]", "--model", str(model_dirs["suno-tiny"]), "--out", str(out),
                   "--voice", "announcer", "--seed", "5", "--text-temp", "0.6", "--waveform-temp", "0.6", "--silent")
    assert proc.returncode == 0, proc.stderr
    audio, rate = read_wav(out)
    assert rate == 24_000 and len(audio) > 0 and len(audio) % 320 == 0
    again = tmp_path / "again.wav"
    run_cli("say", "Hello world [laughs]", "--model", str(model_dirs["suno-tiny"]), "--out", str(again),
            "--voice", "announcer", "--seed", "5", "--text-temp", "0.6", "--waveform-temp", "0.6", "--silent")
    np.testing.assert_array_equal(read_wav(again)[0], audio)


@pytest.mark.parametrize("args,message", [
    (["   "], "text is empty"),
    (["hi", "--voice", "v2/zz_speaker_1"], "unknown voice"),
    (["hi", "--voice", "missing.npz"], "does not exist"),
])
def test_say_errors_exit_non_zero_without_a_wav(args, message, model_dirs, tmp_path):
    out = tmp_path / "x.wav"
    proc = run_cli("say", *args, "--model", str(model_dirs["suno-tiny"]), "--out", str(out), "--silent")
    assert proc.returncode == 2 and message in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_say_without_a_model_offline_fails_fast_with_a_hint(tmp_path):
    proc = run_cli("say", "hi", "--out", str(tmp_path / "x.wav"), "--silent",
                   env={"XDG_CACHE_HOME": str(tmp_path / "cache"), "HF_HOME": str(tmp_path / "hf"),
                        "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 2
    assert "--model" in proc.stderr and "suno/bark-small" in proc.stderr
    assert not (tmp_path / "x.wav").exists()


def test_voices_lists_model_presets(model_dirs):
    proc = run_cli("voices", "--model", str(model_dirs["suno-tiny"]))
    assert proc.returncode == 0
    assert "v2/en_speaker_0" in proc.stdout and "announcer" in proc.stdout


BLOCK_TORCH = textwrap.dedent("""
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers", "onnx"):
                raise ImportError(f"{name} is blocked: the runtime must not need it")
    sys.meta_path.insert(0, Block())
""")


def test_runtime_runs_with_torch_absent(model_dirs, tmp_path):
    script = BLOCK_TORCH + textwrap.dedent(f"""
        import bark_onnx
        from bark_onnx import Bark
        from bark_onnx.cli import main
        tts = Bark.load({str(model_dirs['hf-mini'])!r})
        audio = tts.generate("hello world", voice="announcer", seed=0, silent=True)
        assert audio.size > 0
        assert main(["say", "hi", "--model", {str(model_dirs['hf-mini'])!r}, "--out", {str(tmp_path / 'a.wav')!r},
                     "--silent"]) == 0
        assert main(["export", "--checkpoint", "x", "--out", "y"]) == 2  # needs the export extra, says so
        assert not any(m.split(".")[0] in ("torch", "transformers") for m in sys.modules)
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout and "export extra" in proc.stderr
    assert (tmp_path / "a.wav").is_file()


def test_demo_runs_offline_and_labels_its_noise(tmp_path):
    proc = run_cli("demo", "--size", "tiny", "--seconds", "2", "--silent", "--out", str(tmp_path / "noise.wav"),
                   env={"XDG_CACHE_HOME": str(tmp_path / "cache")}, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM WEIGHTS" in proc.stderr and "real-time factor" in proc.stdout
    for stage in ("semantic", "coarse", "fine", "codec", "total"):
        assert stage in proc.stdout
    audio, rate = read_wav(tmp_path / "noise.wav")
    assert rate == 24_000 and abs(len(audio) / rate - 2.0) < 0.1
