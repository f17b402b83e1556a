"""config.json: every field checked, and the config checked against the graphs beside it at load."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bark_onnx import Bark, ModelDirError
from bark_onnx.runtime.model.config import ModelConfig


def linked_model(source: Path, dst: Path, config) -> Path:
    """A model directory whose files link to `source`'s, with its own config.json (a dict or raw text)."""
    dst.mkdir()
    for f in source.iterdir():
        if f.name != "config.json":
            os.symlink(f, dst / f.name)
    text = config if isinstance(config, str) else json.dumps(config)
    (dst / "config.json").write_text(text)
    return dst


@pytest.fixture
def config(model_dirs) -> dict:
    return json.loads((model_dirs["suno-tiny"] / "config.json").read_text())


def _set(config: dict, dotted: str, value) -> dict:
    *path, last = dotted.split(".")
    node = config
    for key in path:
        node = node[key]
    node[last] = value
    return config


@pytest.mark.parametrize("field,value,message", [
    ("constants", None, "constants must be an object, got NoneType"),
    ("codec.upsampling_ratios", "8542", "codec.upsampling_ratios must be a list, got str"),
    ("graphs.fine.inputs", "codes", "graphs.fine.inputs must be a list"),
    ("graphs.coarse.outputs", [1, 2], r"graphs.coarse.outputs\[0\] must be a string"),
    ("semantic.n_layer", 2.0, "semantic.n_layer must be an integer, got float"),
    ("semantic.n_head", True, "semantic.n_head must be an integer, got bool"),
    ("coarse.bias", "yes", "coarse.bias must be true or false"),
    ("fine.n_embd", -64, "fine: n_embd must be a positive integer"),
    ("fine.n_codes_given", 9, "n_codes_given must lie in"),
    ("semantic.block_size", 10 ** 12, "block_size must be Bark's 1024"),
    ("codec.num_filters", 0, "num_filters must be a positive integer"),
    ("graphs.fine.file", "../../fine.onnx", "file must be a file name inside the model directory"),
    ("tokenizer", "/etc/passwd", "tokenizer must be a file name inside the model directory"),
    ("graphs.semantic.logits_size", 10_000, r"logits columns \[0, 10001\)"),
    ("graphs.semantic.merge_none_id", 5, "merge_none_id"),
    ("graphs", {}, "graphs must describe exactly"),
    ("precision", ["fp32"], "precision must be a string"),
    ("kv_cache", "paged", "unknown kv_cache 'paged'"),
    ("voices", [1], r"voices\[0\] must be a string"),
    ("semantic", [], "semantic must be an object, got list"),
    ("coarse.extra", 1, r"coarse has unknown keys \['extra'\]"),
])
def test_each_field_is_checked(field, value, message, config, model_dirs, tmp_path):
    path = linked_model(model_dirs["suno-tiny"], tmp_path / "m", _set(config, field, value))
    with pytest.raises(ModelDirError, match=message):
        Bark.load(path)


def test_a_missing_field_is_named(config, model_dirs, tmp_path):
    del config["coarse"]["n_head"]
    path = linked_model(model_dirs["suno-tiny"], tmp_path / "m", config)
    with pytest.raises(ModelDirError, match="'coarse.n_head' is missing"):
        Bark.load(path)


@pytest.mark.parametrize("text,message", [
    ("[" * 100_000 + "]" * 100_000, "nested more than 32 levels"),
    ('{"format_version": 1, "source": ' + "[" * 40 + "]" * 40 + "}", "nested more than 32 levels"),
    ('{"format_version": 1, "opset": ' + "9" * 5000 + "}", "cannot read it as JSON"),
    ('{"format_version": 1}' + " " * (2 * 1024 * 1024), "too large for a config.json"),
    ("[1, 2]", "expected a JSON object"),
    (b"\xff\xfe".decode("latin-1"), "cannot read it as JSON"),
])
def test_unreadable_config_files_are_refused(text, message, model_dirs, tmp_path):
    path = linked_model(model_dirs["suno-tiny"], tmp_path / "m", text)
    with pytest.raises(ModelDirError, match=message):
        Bark.load(path)


@pytest.mark.parametrize("field,value,message", [
    ("semantic.n_head", 4, r"semantic.n_head is 4 there, the graph has 2"),
    ("coarse.n_embd", 128, r"head size\) is 64 there, the graph has 32"),
    ("coarse.n_layer", 3, "coarse.n_layer is 3 there, the graph has 2 layers"),
    ("kv_cache", "concat", "kv_cache is concat there, the graph has the 'inplace' layout"),
    ("fine.n_head", 1, None),  # the fine graph fixes no head count: nothing to compare, loads
])
def test_config_that_does_not_match_the_graphs_is_refused_at_load(field, value, message, config, model_dirs,
                                                                   tmp_path):
    path = linked_model(model_dirs["suno-tiny"], tmp_path / "m", _set(config, field, value))
    if message is None:
        Bark.load(path)
        return
    with pytest.raises(ModelDirError, match=message + ".*export it again"):
        Bark.load(path)


def test_graphs_of_another_shape_under_the_same_names_are_refused(model_dirs, tmp_path):
    """hf-mini's fine graph has the same input names as suno-tiny's but other numbers of heads."""
    config = json.loads((model_dirs["suno-tiny"] / "config.json").read_text())
    mini = json.loads((model_dirs["hf-mini"] / "config.json").read_text())
    config["coarse"] = mini["coarse"]
    path = linked_model(model_dirs["suno-tiny"], tmp_path / "m", config)
    with pytest.raises(ModelDirError, match="coarse.onnx does not"):
        Bark.load(path)


def test_a_written_config_reads_back(model_dirs, tmp_path):
    config = ModelConfig.load(model_dirs["hf-mini"])
    config.save(tmp_path)
    assert ModelConfig.load(tmp_path) == config
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temporary file left


@pytest.mark.parametrize("model_dir", ["m" * 300, "no\0such", "/proc/self/nope"])
def test_odd_model_paths_are_model_dir_errors(model_dir):
    with pytest.raises(ModelDirError):
        Bark.load(model_dir)


@pytest.mark.parametrize("options", [dict(threads=0), dict(threads=2.5), dict(threads="2"), dict(providers=5),
                                     dict(providers=[None])])
def test_odd_placements_are_refused(options, model_dirs):
    from bark_onnx import BarkOnnxError

    with pytest.raises(BarkOnnxError, match="threads|providers"):
        Bark.load(model_dirs["suno-tiny"], **options)
