"""Voices: lookup order, Suno's real presets, and untrusted files refused with a reason."""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest

from bark_onnx.runtime.errors import VoiceError
from bark_onnx.runtime.model.voices import VoiceLibrary, load_voice_file, validate_voice


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


def _npz_with_header(path, shape, descr="<i8", payload=b"\0" * 64):
    """An .npz whose member's .npy header claims `shape` whatever the data holds."""
    import io

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("semantic_prompt.npy", header.getvalue() + payload)
    return path


def test_header_claiming_2_40_elements_is_refused_before_allocating(tmp_path):
    path = _npz_with_header(tmp_path / "huge.npz", (2 ** 40,))
    with pytest.raises(VoiceError, match="header claims .* too large"):
        load_voice_file(path)


def test_truncated_and_non_integer_members_are_refused(tmp_path):
    with pytest.raises(VoiceError, match="truncated"):
        load_voice_file(_npz_with_header(tmp_path / "short.npz", (100,)))
    with pytest.raises(VoiceError, match="refused"):
        load_voice_file(_npz_with_header(tmp_path / "float.npz", (8,), descr="<f8"))


@pytest.mark.parametrize("name", ["a" * 300, "v2/" + "b" * 256, "x/" * 3000 + "y", "nul\0byte", "lone\ud800"])
def test_overlong_or_unusable_names_are_voice_errors(name, tmp_path):
    lib = VoiceLibrary(tmp_path, use_hub=False)
    with pytest.raises(VoiceError):
        lib.resolve(name)
    with pytest.raises(VoiceError):
        lib.resolve(name + ".npz")


@pytest.mark.parametrize("value", [[[1, 2], [3]], ["a", "b"], [2 ** 70], object()])
def test_voice_dicts_of_odd_values_are_voice_errors(value):
    voice = _voice()
    voice["semantic_prompt"] = value
    with pytest.raises(VoiceError):
        validate_voice(voice)


@pytest.fixture
def online(monkeypatch):
    """The network switches off, and the hub's lookups recorded instead of made."""
    from bark_onnx.runtime.model import voices

    for name in ("BARK_ONNX_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    asked = []
    monkeypatch.setattr(voices, "_hub_voice", lambda name: asked.append(name))
    return asked


def test_a_name_missing_on_the_hub_is_asked_once(online, tmp_path):
    lib = VoiceLibrary(tmp_path, use_hub=True)
    for _ in range(3):
        with pytest.raises(VoiceError, match="unknown voice"):
            lib.resolve("v2/xx_speaker_1")
    assert online == ["v2/xx_speaker_1"]


@pytest.mark.parametrize("env", ["BARK_ONNX_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_environment_never_asks_the_network(env, online, monkeypatch, tmp_path):
    import socket

    monkeypatch.setenv(env, "1")
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("looked up a host while offline"))
    with pytest.raises(VoiceError, match="unknown voice"):
        VoiceLibrary(tmp_path, use_hub=True).resolve("v2/xx_speaker_1")
    assert online == []


def test_bark_load_offline_keeps_voices_local(online, model_dirs):
    from bark_onnx import Bark

    tts = Bark.load(model_dirs["suno-tiny"], offline=True)
    with pytest.raises(VoiceError, match="unknown voice"):
        tts.load_voice("v2/xx_speaker_1")
    assert online == [] and tts.voices.use_hub is False
    assert tts.load_voice("announcer")["fine_prompt"].shape[0] == 8


def test_offline_without_a_cached_model_says_to_pass_a_model(monkeypatch, tmp_path):
    from bark_onnx.runtime.model.cache import ensure_model
    from bark_onnx.runtime.errors import ModelDirError

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("BARK_ONNX_OFFLINE", "1")
    with pytest.raises(ModelDirError, match="offline.*--model"):
        ensure_model(small=True)
    monkeypatch.delenv("BARK_ONNX_OFFLINE")
    with pytest.raises(ModelDirError, match="offline.*--model"):
        ensure_model(small=True, offline=True)
