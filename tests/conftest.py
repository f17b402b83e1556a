"""Shared fixtures: random-weight checkpoints and their exports, made once per session.

Two transformer shapes (a 2-layer and a 3-layer model, with and without
biases) in both checkpoint layouts and both KV-cache layouts; Bark's real
vocabularies, special tokens and EnCodec shape throughout.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Offline: the hub client must never wait on a network in the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Ray reads these when imported: the tests' Ray instances bind loopback only and report nothing, and a
# test process joins an instance that `serve --ray` started with the token it made (~/.ray/auth_token).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")

TINY = dict(n_layer=2, n_head=2, n_embd=64)
MINI = dict(n_layer=3, n_head=4, n_embd=96)

# name -> (checkpoint layout, shape, bias, KV-cache layout)
MODELS = {
    "suno-tiny": ("suno", TINY, False, "inplace"),
    "hf-mini": ("hf", MINI, True, "concat"),
}


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    from bark_onnx.export.factory import write_checkpoint

    root = tmp_path_factory.mktemp("checkpoints")
    return {name: write_checkpoint(root / name, layout=layout, size=shape, bias=bias, seed=i)
            for i, (name, (layout, shape, bias, _)) in enumerate(MODELS.items())}


@pytest.fixture(scope="session")
def model_dirs(checkpoints, tmp_path_factory) -> dict[str, Path]:
    from bark_onnx.export.exporter import export_model

    root = tmp_path_factory.mktemp("models")
    return {name: export_model(str(checkpoints[name]), root / name, kv_cache=MODELS[name][3], progress=False,
                               report=lambda line: None)
            for name in MODELS}


@pytest.fixture(scope="session")
def reference_models(checkpoints):
    """PyTorch reference modules per model name."""
    from bark_onnx.export.checkpoints import load_checkpoint
    from bark_onnx.export.models import build_models

    return {name: build_models(load_checkpoint(str(path))) for name, path in checkpoints.items()}


@pytest.fixture(scope="session")
def tts(model_dirs):
    """A loaded runtime per model name."""
    from bark_onnx import Bark

    return {name: Bark.load(path) for name, path in model_dirs.items()}


@pytest.fixture(scope="session")
def bert_tokenize(checkpoints):
    """transformers' BertTokenizer (Bark's own tokenizer class) on the test vocabulary."""
    from transformers import BertTokenizer

    tok = BertTokenizer(str(checkpoints["suno-tiny"] / "vocab.txt"), do_lower_case=False)
    return lambda text: tok.encode(text, add_special_tokens=False)


@pytest.fixture(scope="session")
def bark_presets() -> Path:
    """Suno's real presets from an installed `bark==0.1.5` wheel (CI installs it with --no-deps)."""
    from bark_onnx.runtime.model.voices import bark_package_prompts

    prompts = bark_package_prompts()
    if prompts is None:
        if os.environ.get("BARK_ONNX_REQUIRE_PRESETS"):
            pytest.fail("bark==0.1.5 is not installed: pip install --no-deps bark==0.1.5")
        pytest.skip("Suno's presets need 'pip install --no-deps bark==0.1.5'")
    return prompts


def succeeds_or_bark_error(call, *args, **kwargs):
    """Run the call; a BarkOnnxError is a fine answer (None), any other exception fails the test."""
    from bark_onnx import BarkOnnxError

    try:
        return call(*args, **kwargs)
    except BarkOnnxError:
        return None


@pytest.fixture(scope="module")
def tiny_engine(model_dirs):
    """A tiny model of the module's own (four rows), closed at the end."""
    from bark_onnx import Bark

    tts = Bark.load(model_dirs["suno-tiny"], max_batch=4)
    yield tts
    tts.close()


def run_generate(item, logits_at, eos_column: int | None = None, start: int = 0, bands=None):
    """Answer a `Generate` work item as the engine does (runs.py), with scripted logits: logits_at(k)
    gives the (V,) logits of draw k; the graph's draw is kernels' float32 reference, `draw_rows`, and
    `bands` the graph's band index -> columns [lo, hi) (default: the semantic graph's)."""
    from types import SimpleNamespace

    from bark_onnx.kernels.sampling import draw_rows
    from bark_onnx.runtime.engine.decoder import Out
    from bark_onnx.runtime.engine.runs import Runs

    logits = np.asarray(logits_at(0), np.float32)[None]
    width = logits.shape[1]
    info = SimpleNamespace(logits_start=start, logits_size=width, bands=bands or ((0, width), (0, width - 1)))
    runs, rows = Runs(SimpleNamespace(max_rows=1, max_len=1024, info=info, has_eos=False)), np.array([0])
    runs.begin(0, "owner", item)
    draw = runs.draws(rows)
    for k in range(item.max_new):
        if k:
            logits = np.asarray(logits_at(k), np.float32)[None]
        tokens, eos_p = draw_rows(logits, draw.temperature, draw.uniform, runs.ranges[draw.band], eos_column)
        finished = runs.settle(rows, Out(tokens + start, eos_p, lambda: logits), draw)
        if finished:
            return finished[0][1]
        draw = runs.draws(rows)
    raise AssertionError("the run did not end at max_new")


def drive(loop, respond):
    """Run a stage loop (a generator of work items) to its end; `respond(item)` answers each item."""
    reply = None
    while True:
        try:
            item = loop.send(reply)
        except StopIteration as stop:
            return stop.value
        reply = respond(item)


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run only where onnxruntime offers the CUDA provider (onnxruntime-gpu)."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return
    skip = pytest.mark.skip(reason="needs onnxruntime-gpu with CUDAExecutionProvider (pip install '.[gpu]')")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
