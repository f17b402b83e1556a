"""The runtime: seeds, batches, the stop rules, voices made from generations, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from bark_onnx import Bark, InputError, ModelDirError
from bark_onnx.runtime.model.config import GraphInfo
from bark_onnx.export import reference as R
from bark_onnx.runtime.options import SemanticOptions
from bark_onnx.runtime.stages.semantic import max_semantic_tokens, semantic_loop
from bark_onnx.runtime.stages.work import Generate, Release

from .conftest import drive, run_generate


def test_same_seed_same_audio_other_seed_other_audio(tts):
    t = tts["suno-tiny"]
    a = t.generate("hello world", voice="announcer", seed=3, silent=True)
    b = t.generate("hello world", voice="announcer", seed=3, silent=True)
    c = t.generate("hello world", voice="announcer", seed=4, silent=True)
    assert a.dtype == np.float32 and a.ndim == 1 and t.sample_rate == 24_000
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)
    result = t.synthesize("hello world", voice="announcer", seed=3, silent=True)
    np.testing.assert_array_equal(result.audio, a)
    assert set(result.timings) == {"semantic", "coarse", "fine", "codec"}


def test_batch_equals_one_by_one_greedy(tts):
    t = tts["hf-mini"]
    texts = ["hello world", "this is a test voice", "hi"]
    batched = t.text_to_semantic(texts, "announcer", temperature=0, max_gen_duration_s=1.5, silent=True)
    single = [t.text_to_semantic(x, "announcer", temperature=0, max_gen_duration_s=1.5, silent=True) for x in texts]
    for x, y in zip(batched, single):
        np.testing.assert_array_equal(x, y)
    sems = [single[0], single[1][:40], single[2][:57]]  # different lengths, own ends
    coarse = t.semantic_to_coarse(sems, "announcer", temperature=0, silent=True)
    for s, c in zip(sems, coarse):
        np.testing.assert_array_equal(c, t.semantic_to_coarse(s, "announcer", temperature=0, silent=True))
    fine = t.coarse_to_fine(coarse, "announcer", temperature=None)
    for c, f in zip(coarse, fine):
        np.testing.assert_array_equal(f, t.coarse_to_fine(c, "announcer", temperature=None))
    audio = t.decode(fine)
    assert [len(a) for a in audio] == [f.shape[1] * 320 for f in fine]


def test_output_full_is_a_voice(tts, tmp_path):
    from bark_onnx import save_as_prompt

    t = tts["suno-tiny"]
    prompt, audio = t.generate("hello", seed=1, silent=True, output_full=True)
    assert set(prompt) == {"semantic_prompt", "coarse_prompt", "fine_prompt"}
    assert prompt["fine_prompt"].shape[1] * 320 == len(audio)
    save_as_prompt(tmp_path / "me.npz", prompt)
    again = t.generate("hello again", voice=str(tmp_path / "me.npz"), seed=1, silent=True)
    assert again.size > 0
    with pytest.raises(ValueError, match=r"\.npz"):
        save_as_prompt(tmp_path / "me.txt", prompt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["me.npz"]
    from bark_onnx.runtime.files import umask

    assert (tmp_path / "me.npz").stat().st_mode & 0o777 == 0o666 & ~umask()  # as any file the user writes


class ScriptedDecoder:
    """A stand-in decoder whose logits follow a script: EOS rises from a given step on."""

    info = GraphInfo(file="x", inputs=(), outputs=(), logits_size=10_001, merge_none_id=129_600)

    def __init__(self, eos_at: int, eos_logit: float = 9.0):
        self.eos_at, self.eos_logit = eos_at, eos_logit
        self.step = 0

    def start(self, batch):
        self.step = 0

    def forward(self, ids, merge_ids=None):
        logits = np.tile(np.linspace(0, 3, 10_001, dtype=np.float32), (1, 1))
        logits[:, 10_000] = -5.0
        logits[:, self.step % 7] = 4.0
        if self.step >= self.eos_at:
            logits[:, 10_000] = self.eos_logit
        self.step += 1
        return logits

    def respond(self, item):
        """Answers the semantic loop's work items: its run, as the engine does, on the scripted logits."""
        if isinstance(item, Generate):
            self.start(1)
            return run_generate(item, lambda k: self.forward(None)[0], eos_column=10_000)
        assert isinstance(item, Release)
        return None


class ScriptedTorchModel(torch.nn.Module):
    """The same script for the PyTorch reference loop."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, x, merge_context=False, past_kv=None):
        if past_kv is None:
            self.decoder.start(1)
        return torch.from_numpy(self.decoder.forward(x.numpy()))[:, None, :], "cache"


def _semantic(decoder, opts, rng=None):
    loop = semantic_loop(np.zeros(256, np.int64), np.zeros(256, np.int64), opts, rng)
    return drive(loop, decoder.respond)


@pytest.mark.parametrize("opts", [
    SemanticOptions(temperature=None),
    SemanticOptions(temperature=None, allow_early_stop=False, max_gen_duration_s=0.5),
    SemanticOptions(temperature=None, max_gen_duration_s=0.1),
])
def test_stop_rules_match_reference(opts):
    for at in (0, 5, 30):
        got = _semantic(ScriptedDecoder(at), opts)
        ref = R.generate_semantic(ScriptedTorchModel(ScriptedDecoder(at)), lambda t: [1], "x", temp=opts.temperature,
                                  max_gen_duration_s=opts.max_gen_duration_s, allow_early_stop=opts.allow_early_stop)
        np.testing.assert_array_equal(got, ref)


def test_requests_end_on_their_own_and_min_eos_p_stops_sampling():
    assert [len(_semantic(ScriptedDecoder(at), SemanticOptions(temperature=None))) for at in (3, 9)] == [3, 9]
    # sampling: P(EOS) >= min_eos_p stops even when EOS is not drawn
    got = _semantic(ScriptedDecoder(4, eos_logit=1.5), SemanticOptions(temperature=1.0, min_eos_p=1e-5),
                    np.random.default_rng(0))
    assert len(got) == 4


def test_duration_limit_counts_like_bark():
    assert max_semantic_tokens(None) == 768
    assert max_semantic_tokens(13.0) == 649
    assert max_semantic_tokens(0.01) == 1


@pytest.mark.parametrize("call,kwargs,message", [
    ("text_to_semantic", dict(text=""), "empty"),
    ("text_to_semantic", dict(text=[]), "list of texts is empty"),
    ("text_to_semantic", dict(text=["ok", "  "]), "empty"),
    ("text_to_semantic", dict(text="hi", temperature=-1), "temperature"),
    ("text_to_semantic", dict(text="hi", top_p=1.5), "top_p"),
    ("text_to_semantic", dict(text="hi", top_k=0), "top_k"),
    ("semantic_to_coarse", dict(semantic=np.array([1, 20_000])), r"\[0, 10000\)"),
    ("semantic_to_coarse", dict(semantic=np.zeros((2, 3), np.int64)), "1-D"),
    ("semantic_to_coarse", dict(semantic=np.arange(5), max_coarse_history=700), "max_coarse_history"),
    ("coarse_to_fine", dict(coarse=np.zeros((9, 5), np.int64)), "shape"),
    ("coarse_to_fine", dict(coarse=np.full((2, 5), 1024)), r"\[0, 1024\)"),
    ("decode", dict(fine=np.zeros((7, 5), np.int64)), "shape"),
])
def test_bad_input_is_named(call, kwargs, message, tts):
    with pytest.raises(InputError, match=message):
        getattr(tts["suno-tiny"], call)(**kwargs)


def _copy_model(model_dirs, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(model_dirs["suno-tiny"], dst)
    return dst


def test_model_of_another_format_version(model_dirs, tmp_path):
    path = _copy_model(model_dirs, tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["format_version"] = 99
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="format version 99.*export the model again"):
        Bark.load(path)


def test_missing_or_corrupt_graph(model_dirs, tmp_path):
    path = _copy_model(model_dirs, tmp_path)
    (path / "fine.onnx").unlink()
    with pytest.raises(ModelDirError, match="missing graph .*fine.onnx"):
        Bark.load(path)
    shutil.copy(model_dirs["suno-tiny"] / "fine.onnx", path / "fine.onnx")
    (path / "codec.onnx").write_bytes(b"garbage")
    with pytest.raises(ModelDirError, match="cannot load graph .*codec.onnx.*export the model again"):
        Bark.load(path)
    shutil.copy(model_dirs["suno-tiny"] / "codec.onnx", path / "codec.onnx")
    shutil.copy(model_dirs["hf-mini"] / "coarse.onnx", path / "coarse.onnx")  # mixed exports
    shutil.copy(model_dirs["hf-mini"] / "coarse.onnx.data", path / "coarse.onnx.data")
    with pytest.raises(ModelDirError, match="coarse.onnx does not have the inputs"):
        Bark.load(path)


def test_not_a_model_dir(tmp_path):
    with pytest.raises(ModelDirError, match="does not exist"):
        Bark.load(tmp_path / "nothing")
    with pytest.raises(ModelDirError, match="no config.json"):
        Bark.load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelDirError, match="cannot read it as JSON"):
        Bark.load(tmp_path)


def test_unknown_provider_is_refused(model_dirs):
    from bark_onnx import BarkOnnxError

    with pytest.raises(BarkOnnxError, match="not available in this onnxruntime build"):
        Bark.load(model_dirs["suno-tiny"], providers=["NoSuchExecutionProvider"])


def test_bark_compatible_api(model_dirs, monkeypatch):
    import bark_onnx
    from bark_onnx import compat

    monkeypatch.setenv("BARK_ONNX_MODEL", str(model_dirs["suno-tiny"]))
    monkeypatch.setattr(compat, "_MODEL", None)
    assert bark_onnx.SAMPLE_RATE == 24_000
    bark_onnx.preload_models()
    audio = bark_onnx.generate_audio("hello", history_prompt="announcer", silent=True)
    full, audio2 = bark_onnx.generate_audio("hello", text_temp=0.5, waveform_temp=0.5, silent=True, output_full=True)
    assert audio.ndim == 1 and full["fine_prompt"].shape[1] * 320 == len(audio2)
    sem = bark_onnx.text_to_semantic("hello", history_prompt="announcer", temp=0.7, silent=True)
    out = bark_onnx.semantic_to_waveform(sem, history_prompt="announcer", temp=0.7, silent=True)
    assert out.dtype == np.float32


def test_cache_follows_xdg_and_suno_small_switch(monkeypatch, tmp_path):
    from bark_onnx.runtime.model.cache import cached_model_dir, suno_use_small
    from bark_onnx.runtime.model.paths import cache_root

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("SUNO_USE_SMALL_MODELS", raising=False)
    assert cache_root() == tmp_path / "bark_onnx" and not suno_use_small()
    monkeypatch.setenv("SUNO_USE_SMALL_MODELS", "True")
    assert suno_use_small() and cached_model_dir(True).name == "suno--bark-small-int8"
