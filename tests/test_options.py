"""Generation options: checked once, reachable from every entry point, the same audio from every API."""

from __future__ import annotations

import numpy as np
import pytest

from bark_onnx import CoarseOptions, FineOptions, GenerationOptions, InputError, SemanticOptions

TEXT = "hello world"
VOICE = "announcer"
# top_k=1 (or a tiny top_p) makes the semantic and coarse draws deterministic whatever the seed, so an
# entry point's tokens can be compared with the stage methods' greedy tokens: the option reached the stage.
SHARED = dict(max_gen_duration_s=0.7, max_coarse_history=120, sliding_window_len=30, fine_temperature=0)


def _expected(t):
    sem = t.text_to_semantic(TEXT, VOICE, temperature=0, max_gen_duration_s=0.7, silent=True)
    coarse = t.semantic_to_coarse(sem, VOICE, temperature=0, max_coarse_history=120, sliding_window_len=30,
                                  silent=True)
    fine = t.coarse_to_fine(coarse, VOICE, temperature=0)
    return sem, coarse, fine


def _entry_points(t):
    """name -> (call with keywords -> (semantic, coarse, fine or None when chunked by a stream))."""
    import bark_onnx

    def streamed(job):
        list(job)
        g = job.result()
        return g.semantic, g.coarse, None

    def whole(g):
        return g.semantic, g.coarse, g.fine

    def compat(**kw):
        full, _ = bark_onnx.generate_audio(TEXT, VOICE, silent=True, output_full=True, seed=5, **kw)
        return full["semantic_prompt"], full["coarse_prompt"], full["fine_prompt"]

    def generate(**kw):
        prompt, _ = t.generate(TEXT, VOICE, seed=5, silent=True, output_full=True, **kw)
        return prompt["semantic_prompt"], prompt["coarse_prompt"], prompt["fine_prompt"]

    return {
        "synthesize": lambda **kw: whole(t.synthesize(TEXT, VOICE, seed=5, silent=True, **kw)),
        "generate": generate,
        "synthesize long": lambda **kw: whole(t.synthesize(TEXT, VOICE, seed=5, silent=True, long=True, **kw)),
        "stream": lambda **kw: streamed(t.stream(TEXT, VOICE, seed=5, **kw)),
        "stream long": lambda **kw: streamed(t.stream(TEXT, VOICE, seed=5, long=True, **kw)),
        "submit": lambda **kw: streamed(t.submit(bark_onnx.Request.make(TEXT, VOICE, seed=5, stream=True, **kw))),
        "generate_audio": compat,
    }


@pytest.mark.parametrize("filter_kw", [dict(top_k=1), dict(top_p=1e-6)])
def test_every_option_reaches_its_stage_from_every_entry_point(filter_kw, tts, monkeypatch):
    from bark_onnx import compat

    t = tts["suno-tiny"]
    monkeypatch.setattr(compat, "_MODEL", t)
    sem, coarse, fine = _expected(t)
    options = GenerationOptions(semantic=SemanticOptions(**filter_kw), coarse=CoarseOptions(**filter_kw))
    for name, call in _entry_points(t).items():
        for how in ("keywords", "options"):
            if how == "keywords":
                got = call(**filter_kw, **SHARED)
            else:  # the options object, with the rest as keywords on top
                got = call(options=options, **SHARED)
            np.testing.assert_array_equal(got[0], sem, err_msg=f"{name} ({how}): semantic")
            np.testing.assert_array_equal(got[1], coarse, err_msg=f"{name} ({how}): coarse")
            if got[2] is not None:
                np.testing.assert_array_equal(got[2], fine, err_msg=f"{name} ({how}): fine")
    free = t.synthesize(TEXT, VOICE, seed=5, silent=True, max_gen_duration_s=0.7)  # without the filter
    assert not np.array_equal(free.semantic, sem)


def test_stage_methods_take_their_options(tts):
    t = tts["suno-tiny"]
    greedy = t.text_to_semantic(TEXT, temperature=0, max_gen_duration_s=0.5, silent=True)
    via_object = t.text_to_semantic(TEXT, options=SemanticOptions(temperature=0, max_gen_duration_s=0.5), silent=True)
    via_whole = t.text_to_semantic(TEXT, options=GenerationOptions(semantic=SemanticOptions(top_k=1)),
                                   max_gen_duration_s=0.5, seed=3, silent=True)
    np.testing.assert_array_equal(greedy, via_object)
    np.testing.assert_array_equal(greedy, via_whole)
    coarse = t.semantic_to_coarse(greedy, temperature=0, silent=True)
    np.testing.assert_array_equal(coarse, t.semantic_to_coarse(greedy, options=CoarseOptions(top_k=1), seed=9,
                                                               silent=True))
    np.testing.assert_array_equal(t.coarse_to_fine(coarse, temperature=0),
                                  t.coarse_to_fine(coarse, options=FineOptions(temperature=None)))


def test_generate_audio_equals_bark_generate_for_a_seed(tts, monkeypatch):
    import bark_onnx
    from bark_onnx import compat

    t = tts["hf-mini"]
    monkeypatch.setattr(compat, "_MODEL", t)
    for seed in (0, 11):
        ours = t.generate(TEXT, VOICE, seed=seed, silent=True, text_temperature=0.6, waveform_temperature=0.8,
                          max_gen_duration_s=1.0)
        bark = bark_onnx.generate_audio(TEXT, history_prompt=VOICE, text_temp=0.6, waveform_temp=0.8, seed=seed,
                                        silent=True, max_gen_duration_s=1.0)
        np.testing.assert_array_equal(ours, bark)


@pytest.mark.parametrize("make,message", [
    (lambda: SemanticOptions(temperature=float("nan")), "finite"),
    (lambda: SemanticOptions(temperature=float("inf")), "finite"),
    (lambda: SemanticOptions(temperature=-1), r"\[0, inf\)"),
    (lambda: SemanticOptions(temperature="0.7"), "number"),
    (lambda: SemanticOptions(top_k=1.5), "integer"),
    (lambda: SemanticOptions(top_k=True), "integer"),
    (lambda: SemanticOptions(top_p=0), r"\(0, 1\]"),
    (lambda: SemanticOptions(min_eos_p=1.5), r"\[0, 1\]"),
    (lambda: SemanticOptions(max_gen_duration_s=float("nan")), "finite"),
    (lambda: SemanticOptions(max_gen_duration_s="1"), "number"),
    (lambda: SemanticOptions(allow_early_stop="yes"), "True or False"),
    (lambda: CoarseOptions(max_coarse_history=700), "max_coarse_history"),
    (lambda: CoarseOptions(sliding_window_len=200), "sliding_window_len"),
    (lambda: FineOptions(temperature=-0.5), "temperature"),
    (lambda: GenerationOptions(semantic=CoarseOptions()), "SemanticOptions"),
])
def test_bad_options_are_refused_when_made(make, message):
    with pytest.raises(InputError, match=message):
        make()


def test_numpy_scalars_are_welcome_and_normalised():
    opts = SemanticOptions(temperature=np.float32(0.5), top_k=np.int64(3), allow_early_stop=np.bool_(False))
    assert type(opts.temperature) is float and type(opts.top_k) is int and opts.allow_early_stop is False


def test_unknown_keywords_and_bad_seeds_are_named(tts):
    t = tts["suno-tiny"]
    with pytest.raises(InputError, match="unknown option.*temprature"):
        t.generate(TEXT, temprature=0.5)
    with pytest.raises(InputError, match="unknown option.*fine_temperature"):
        t.text_to_semantic(TEXT, fine_temperature=0.5)  # not a semantic option
    for seed in (-1, 1.5, "7", True):
        with pytest.raises(InputError, match="seed"):
            t.generate(TEXT, seed=seed)
