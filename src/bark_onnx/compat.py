"""Suno's `bark` API on this runtime: change the import, keep the code.

    from bark_onnx import SAMPLE_RATE, generate_audio, preload_models
    audio = generate_audio("Hello", history_prompt="v2/en_speaker_6")

The model is the directory in $BARK_ONNX_MODEL, or the cached export of
`suno/bark` (`suno/bark-small` with SUNO_USE_SMALL_MODELS set, as in Bark),
made on first use under $XDG_CACHE_HOME/bark_onnx. That promise needs the
exporter, so these functions live here, above the runtime (which never imports
export code), and hand it down (first_use.py).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from .first_use import export_on_first_use
from .runtime.bark import Bark
from .runtime.constants import SAMPLE_RATE
from .runtime.errors import VoiceError
from .runtime.files import write_atomic
from .runtime.model.cache import model_or_default, suno_use_small
from .runtime.model.voices import validate_voice
from .runtime.options import check_seed
from .runtime.stages.pipeline import stage_rngs

_MODEL: Bark | None = None


def preload_models(text_use_gpu=True, text_use_small=False, coarse_use_gpu=True, coarse_use_small=False,
                   fine_use_gpu=True, fine_use_small=False, codec_use_gpu=True, force_reload=False) -> Bark:
    """Load (and on first use export) the model. One model serves every stage here, so
    any *_use_small (or SUNO_USE_SMALL_MODELS) selects the small one."""
    global _MODEL
    if _MODEL is not None and not force_reload:
        return _MODEL
    if _MODEL is not None:
        _MODEL.close()
    small = suno_use_small() or text_use_small or coarse_use_small or fine_use_small
    use_gpu = text_use_gpu or coarse_use_gpu or fine_use_gpu or codec_use_gpu
    providers = None if use_gpu else ["cpu"]
    model_dir = model_or_default(os.environ.get("BARK_ONNX_MODEL"), small=small, providers=providers,
                                 exporter=export_on_first_use)
    _MODEL = Bark.load(model_dir, providers=providers)
    return _MODEL


def _model() -> Bark:
    return _MODEL if _MODEL is not None else preload_models()


def text_to_semantic(text: str, history_prompt=None, temp: float = 0.7, silent: bool = False, seed=None,
                     options=None, **keywords) -> np.ndarray:
    """Bark's text_to_semantic; keywords as `Bark.text_to_semantic` (top_k, min_eos_p, ...)."""
    return _model().text_to_semantic(text, history_prompt, temperature=temp, silent=silent, seed=seed,
                                     options=options, **keywords)


def semantic_to_waveform(semantic_tokens: np.ndarray, history_prompt=None, temp: float = 0.7, silent: bool = False,
                         output_full: bool = False, seed=None, options=None, **keywords):
    """Bark's semantic_to_waveform: coarse, fine and codec (fine at temperature 0.5, as Bark);
    keywords: CoarseOptions' fields and fine_temperature. Returns audio, or (full_generation, audio)."""
    tts = _model()
    fine_temp = keywords.pop("fine_temperature", 0.5)
    seeds = stage_rngs(check_seed(seed), 2)
    voice = tts.load_voice(history_prompt)
    coarse = tts.semantic_to_coarse(semantic_tokens, voice, temperature=temp, silent=silent, seed=seeds[0],
                                    options=options, **keywords)
    fine = tts.coarse_to_fine(coarse, voice, temperature=fine_temp, seed=seeds[1])
    audio = tts.decode(fine)
    if output_full:
        return {"semantic_prompt": np.asarray(semantic_tokens), "coarse_prompt": coarse, "fine_prompt": fine}, audio
    return audio


def generate_audio(text: str, history_prompt=None, text_temp: float = 0.7, waveform_temp: float = 0.7,
                   silent: bool = False, output_full: bool = False, seed=None, options=None, **keywords):
    """Bark's generate_audio: returns audio, or (full_generation, audio) with output_full.

    The same audio as `Bark.generate` for the same arguments and seed; keywords as `Bark.generate`.
    """
    result = _model().synthesize(text, history_prompt, seed=seed, silent=silent, options=options,
                                 text_temperature=text_temp, waveform_temperature=waveform_temp, **keywords)
    return (result.prompt, result.audio) if output_full else result.audio


def save_as_prompt(filepath: str | os.PathLike, full_generation: dict) -> None:
    """Save a generation as a voice .npz (checked first, written atomically)."""
    path = Path(filepath)
    if path.suffix != ".npz":
        raise VoiceError(f"voice files end in .npz, got {str(path)!r}")
    voice = validate_voice(full_generation, "full_generation")
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # a voice is a few kB
    np.savez(buffer, **voice)
    write_atomic(path, buffer.getvalue())


__all__ = ["SAMPLE_RATE", "preload_models", "text_to_semantic", "semantic_to_waveform", "generate_audio",
           "save_as_prompt"]
