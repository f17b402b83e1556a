"""Greedy decoding: the runtime gives the PyTorch reference's tokens, stage by stage."""

from __future__ import annotations

import numpy as np
import pytest

from bark_onnx.export import reference as R

from .conftest import MODELS

TEXT = "Hello world, this is [laughs] a test... ♪ I am Bark ONNX 日本語!"
AUDIO_TOLERANCE = 1e-4


def _check_pipeline(tts, models, tokenize, voice, max_seconds=2.0):
    v = tts.load_voice(voice)
    sem_ref = R.generate_semantic(models["semantic"], tokenize, TEXT, v, temp=None, max_gen_duration_s=max_seconds)
    sem = tts.text_to_semantic(TEXT, voice, temperature=None, max_gen_duration_s=max_seconds, silent=True)
    np.testing.assert_array_equal(sem, sem_ref)
    coarse_ref = R.generate_coarse(models["coarse"], sem_ref, v, temp=None)
    coarse = tts.semantic_to_coarse(sem, voice, temperature=None, silent=True)
    np.testing.assert_array_equal(coarse, coarse_ref)
    fine_ref = R.generate_fine(models["fine"], coarse_ref, v, temp=None)
    fine = tts.coarse_to_fine(coarse, voice, temperature=None)
    np.testing.assert_array_equal(fine, fine_ref)
    audio_ref = R.decode(models["codec"], fine_ref)
    audio = tts.decode(fine)
    assert audio.shape == audio_ref.shape == (fine.shape[1] * 320,)
    assert np.abs(audio - audio_ref).max() <= AUDIO_TOLERANCE
    return sem, coarse, fine


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("voice", [None, "v2/en_speaker_1"])
def test_greedy_tokens_equal_reference(name, voice, tts, reference_models, bert_tokenize):
    sem, coarse, fine = _check_pipeline(tts[name], reference_models[name], bert_tokenize, voice)
    assert len(sem) == 100  # 2 s at 49.9 Hz (random weights never pick EOS here)
    assert coarse.shape == (2, 150) and fine.shape == (8, 150)


@pytest.mark.parametrize("voice", ["v2/en_speaker_6", "v2/ja_speaker_0", "announcer"])
def test_greedy_with_suno_presets(voice, bark_presets, tts, reference_models, bert_tokenize):
    assert (bark_presets / f"{voice}.npz").is_file()
    _check_pipeline(tts["suno-tiny"], reference_models["suno-tiny"], bert_tokenize, voice)


def test_long_segment_crosses_fine_windows(tts, reference_models, bert_tokenize):
    """~13 s: many coarse windows and three fine windows (stride 512, last one clamped)."""
    t, models = tts["suno-tiny"], reference_models["suno-tiny"]
    sem = t.text_to_semantic(TEXT, temperature=None, allow_early_stop=False, max_gen_duration_s=13.0, silent=True)
    assert len(sem) == 649
    coarse = t.semantic_to_coarse(sem, "announcer", temperature=None, silent=True)
    np.testing.assert_array_equal(coarse, R.generate_coarse(models["coarse"], sem, t.load_voice("announcer"), temp=None))
    fine = t.coarse_to_fine(coarse, "announcer", temperature=None)
    np.testing.assert_array_equal(fine, R.generate_fine(models["fine"], coarse, t.load_voice("announcer"), temp=None))


def test_coarse_history_options_match_reference(tts, reference_models):
    t, models = tts["hf-mini"], reference_models["hf-mini"]
    sem = np.random.default_rng(0).integers(0, 10_000, 90)
    for hist, win in ((60, 30), (300, 100), (630, 60)):
        got = t.semantic_to_coarse(sem, "announcer", temperature=None, max_coarse_history=hist,
                                   sliding_window_len=win, silent=True)
        ref = R.generate_coarse(models["coarse"], sem, t.load_voice("announcer"), temp=None,
                                max_coarse_history=hist, sliding_window_len=win)
        np.testing.assert_array_equal(got, ref)
