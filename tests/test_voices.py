"""Voices: lookup order, Suno's real presets, and untrusted files refused with a reason."""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest

from bark_onnx.errors import VoiceError
from bark_onnx.voices import VoiceLibrary, load_voice_file, validate_voice


def _voice(n=100, m=150):
    rng = np.random.default_rng(0)
    return {"semantic_prompt": rng.integers(0, 10_000, n), "coarse_prompt": rng.integers(0, 1024, (2, m)),
            "fine_prompt": rng.integers(0, 1024, (8, m))}


def test_suno_presets_load_and_check(bark_presets):
    names = VoiceLibrary(None, use_hub=False).names()
    assert {"v2/en_speaker_6", "v2/ja_speaker_0", "announcer", "en_speaker_6"} <= set(names)
    assert len([n for n in names if n.startswith("v2/")]) == 130
    voice = VoiceLibrary(None, use_hub=False).resolve("v2/en_speaker_6")
    assert voice["semantic_prompt"].dtype == np.int64 and voice["fine_prompt"].shape[0] == 8


def test_model_voices_come_first(model_dirs):
    lib = VoiceLibrary(model_dirs["suno-tiny"] / "voices", use_hub=False)
    assert {"v2/en_speaker_0", "announcer"} <= set(lib.names())
    assert lib.sources()["v2/en_speaker_0"].endswith("voices")


def test_unknown_voice_lists_known_names(model_dirs):
    lib = VoiceLibrary(model_dirs["suno-tiny"] / "voices", use_hub=False)
    with pytest.raises(VoiceError, match=r"unknown voice 'v2/xx_speaker_9'.*v2/en_speaker_0"):
        lib.resolve("v2/xx_speaker_9")
    with pytest.raises(VoiceError, match="not a voice preset name"):
        lib.resolve("../../no/such/voice")


def test_npz_path_and_dict_voices(tmp_path):
    np.savez(tmp_path / "mine.npz", **_voice())
    lib = VoiceLibrary(None, use_hub=False)
    assert lib.resolve(str(tmp_path / "mine.npz"))["coarse_prompt"].shape == (2, 150)
    assert lib.resolve(_voice(5, 7))["semantic_prompt"].shape == (5,)


def test_pickled_objects_are_refused(tmp_path):
    v = _voice()
    v["semantic_prompt"] = np.array([object()], dtype=object)
    np.savez(tmp_path / "evil.npz", **v)
    with pytest.raises(VoiceError, match="refused"):
        load_voice_file(tmp_path / "evil.npz")


def test_raw_pickle_and_garbage_are_refused(tmp_path):
    (tmp_path / "p.npz").write_bytes(pickle.dumps({"semantic_prompt": [1, 2, 3]}))
    with pytest.raises(VoiceError, match="not a valid .npz"):
        load_voice_file(tmp_path / "p.npz")
    with pytest.raises(VoiceError, match="does not exist"):
        load_voice_file(tmp_path / "missing.npz")


def test_oversized_member_is_refused_before_loading(tmp_path):
    path = tmp_path / "big.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("semantic_prompt.npy", b"\0" * (17 * 1024 * 1024))
    with pytest.raises(VoiceError, match="too large"):
        load_voice_file(path)


@pytest.mark.parametrize("key,value,message", [
    ("semantic_prompt", np.zeros((2, 5), np.int64), "shape"),
    ("coarse_prompt", np.zeros((3, 5), np.int64), "shape"),
    ("fine_prompt", np.zeros((8, 0), np.int64), "steps"),
    ("semantic_prompt", np.array([1, 10_000]), r"\[0, 10000\)"),
    ("coarse_prompt", np.full((2, 4), -1), r"\[0, 1024\)"),
    ("fine_prompt", np.full((8, 4), 1024), r"\[0, 1024\)"),
    ("semantic_prompt", np.array([1.5, 2.0]), "integers"),
])
def test_bad_arrays_are_named(key, value, message):
    voice = _voice()
    voice[key] = value
    with pytest.raises(VoiceError, match=message):
        validate_voice(voice)


def test_missing_arrays_are_named():
    voice = _voice()
    del voice["fine_prompt"]
    with pytest.raises(VoiceError, match="missing \\['fine_prompt'\\]"):
        validate_voice(voice)
