"""Export: both checkpoint layouts, both KV layouts, every graph checked against PyTorch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from bark_onnx.runtime.model.config import FORMAT_VERSION, ModelConfig
from bark_onnx.runtime.errors import BarkOnnxError

from .conftest import MODELS

FP32_TOLERANCE = 1e-4


@pytest.mark.parametrize("name", list(MODELS))
def test_validate_every_graph_against_pytorch(name, model_dirs, reference_models):
    from bark_onnx.export.validate import validate_model_dir

    checks = validate_model_dir(model_dirs[name], reference_models[name])
    outputs = {(c.graph, c.output) for c in checks}
    # prefill, 20 steps through the cache vs full recomputation, and the cache itself
    for stage in ("semantic", "coarse"):
        assert {(stage, "logits (prefill)"), (stage, "logits (20 steps)")} <= outputs
    assert {("fine", f"logits (codebook {i})") for i in range(1, 8)} <= outputs
    assert len([c for c in checks if c.graph == "codec"]) >= 3
    for check in checks:
        assert check.max_abs <= FP32_TOLERANCE, str(check)


def test_model_directory_describes_itself(model_dirs, checkpoints):
    for name, path in model_dirs.items():
        layout, shape, bias, kv = MODELS[name]
        config = ModelConfig.load(path)
        assert config.semantic.n_layer == shape["n_layer"] and config.fine.n_embd == shape["n_embd"]
        assert config.semantic.bias is bias and config.kv_cache == kv and config.precision == "fp32"
        assert config.source["format"] == layout and config.source["checkpoint"] == str(checkpoints[name])
        assert config.bark_onnx_version and config.format_version == FORMAT_VERSION == 3 and config.opset == 17
        assert sorted(config.voices) == ["announcer", "v2/en_speaker_0", "v2/en_speaker_1"]
        for stage, info in config.graphs.items():
            model = onnx.load(str(path / info.file), load_external_data=False)
            assert [i.name for i in model.graph.input] == list(info.inputs), stage
            assert [o.name for o in model.graph.output] == list(info.outputs), stage
        assert (path / "tokenizer.json").is_file()
        assert all((path / "voices" / f"{v}.npz").is_file() for v in config.voices)


def test_weights_stored_once(model_dirs):
    """One graph per stage holds each weight once (the fine head reuses the embedding tables)."""
    path = model_dirs["suno-tiny"]
    config = ModelConfig.load(path)
    fine = onnx.load(str(path / "fine.onnx"), load_external_data=False)
    names = [t.name for t in fine.graph.initializer]
    assert len(names) == len(set(names))
    assert "lm_heads.weight" not in names and "wtes.weight" in names
    d = config.fine.n_embd
    expected = 8 * 1056 * d + 1024 * d  # tables + positions dominate
    assert (path / "fine.onnx.data").stat().st_size < 4 * (expected + config.fine.n_layer * 13 * d * d) * 1.01


def test_logits_only_where_the_loop_reads(model_dirs):
    config = ModelConfig.load(model_dirs["suno-tiny"])
    assert (config.graphs["semantic"].logits_start, config.graphs["semantic"].logits_size) == (0, 10_001)
    assert (config.graphs["coarse"].logits_start, config.graphs["coarse"].logits_size) == (10_000, 2048)
    assert config.graphs["fine"].logits_size == 1024


def test_codec_writes_no_trimmed_samples(model_dirs):
    """Each transposed convolution trims its right end itself (pads [0, kernel - stride]), and the
    only copies of the signal are one concatenation per padded convolution (validation checks values)."""
    graph = onnx.load(str(model_dirs["suno-tiny"] / "codec.onnx"), load_external_data=False).graph
    convs = [n for n in graph.node if n.op_type == "ConvTranspose"]
    assert len(convs) == 4
    for conv in convs:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}
        assert attrs["pads"] == [0, attrs["kernel_shape"][0] - attrs["strides"][0]]
        assert not [n for n in graph.node if n.op_type == "Slice" and n.input[0] == conv.output[0]]
    assert not [n for n in graph.node if n.op_type == "Pad" and any(
        a.name == "mode" and a.s == b"reflect" for a in n.attribute)]


def test_codec_trim_fold_refuses_an_unknown_graph():
    from onnx import TensorProto, helper

    from bark_onnx.export.codec_graph import fold_transposed_trims

    conv = helper.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[4], strides=[2], pads=[0, 0])
    graph = helper.make_graph([conv], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    with pytest.raises(RuntimeError, match="unexpected trim after"):
        fold_transposed_trims(graph, [2])
    with pytest.raises(RuntimeError, match="1 ConvTranspose nodes, expected 2"):
        fold_transposed_trims(graph, [2, 2])


def test_fp16_export_validates(checkpoints, tmp_path):
    from bark_onnx.export.exporter import export_model

    lines = []
    out = export_model(str(checkpoints["suno-tiny"]), tmp_path / "fp16", precision="fp16", validate=True,
                       progress=False, report=lines.append)
    config = ModelConfig.load(out)
    assert config.precision == "fp16"
    assert any("semantic" in line and "ok" in line for line in lines)
    model = onnx.load(str(out / "coarse.onnx"), load_external_data=False)
    kv_type = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}["past_key.0"]
    assert kv_type == onnx.TensorProto.FLOAT16


def test_cli_export_with_validate_prints_errors(checkpoints, tmp_path):
    out = tmp_path / "cli-model"
    proc = subprocess.run([sys.executable, "-m", "bark_onnx.cli", "export", "--checkpoint",
                           str(checkpoints["hf-mini"]), "--out", str(out), "--validate"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "[1/8] reading checkpoint" in proc.stderr
    for stage in ("semantic", "coarse", "fine", "codec"):
        assert f"{stage} " in proc.stderr and "max abs" in proc.stderr
    assert "FAILED" not in proc.stderr
    assert json.loads((out / "config.json").read_text())["source"]["format"] == "hf"


def test_export_refuses_to_overwrite_and_force_replaces(checkpoints, model_dirs, tmp_path):
    from bark_onnx.export.exporter import export_model

    out = tmp_path / "m"
    export_model(str(checkpoints["suno-tiny"]), out, progress=False, report=lambda s: None)
    with pytest.raises(BarkOnnxError, match="already exists"):
        export_model(str(checkpoints["suno-tiny"]), out, progress=False)
    export_model(str(checkpoints["hf-mini"]), out, progress=False, overwrite=True, report=lambda s: None)
    assert ModelConfig.load(out).source["format"] == "hf"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary or old directories left


def test_export_single_file_checkpoints(checkpoints, tmp_path):
    """--checkpoint may name one file: a Suno .pt (its set is taken) or an HF weights file."""
    from bark_onnx.export.exporter import export_model

    a = export_model(str(checkpoints["suno-tiny"] / "text.pt"), tmp_path / "a", progress=False, report=lambda s: None)
    b = export_model(str(checkpoints["hf-mini"] / "model.safetensors"), tmp_path / "b", progress=False,
                     report=lambda s: None)
    assert ModelConfig.load(a).source["format"] == "suno" and ModelConfig.load(b).source["format"] == "hf"


def test_failed_validation_leaves_nothing(checkpoints, tmp_path, monkeypatch):
    from bark_onnx.export import validate
    from bark_onnx.export.exporter import export_model

    monkeypatch.setitem(validate.TOLERANCE, "fp32", 1e-12)  # nothing can meet it
    with pytest.raises(validate.ValidationError, match="beyond the tolerance"):
        export_model(str(checkpoints["suno-tiny"]), tmp_path / "m", validate=True, progress=False,
                     report=lambda s: None)
    assert list(tmp_path.iterdir()) == []


def test_export_from_a_hub_id_uses_the_cache_offline(checkpoints, tmp_path, monkeypatch):
    """A hub id resolves through huggingface_hub (here: unreachable, so a clear error, fast)."""
    from bark_onnx.export.exporter import export_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with pytest.raises(BarkOnnxError, match="Hugging Face hub"):
        export_model("suno/bark-small", tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists()


def test_random_checkpoint_sizes_are_one_flag_away():
    from bark_onnx.export.factory import gpt_configs

    small, large = gpt_configs("small"), gpt_configs("large")
    assert (small["semantic"].n_layer, small["semantic"].n_head, small["semantic"].n_embd) == (12, 12, 768)
    assert (large["coarse"].n_layer, large["coarse"].n_head, large["coarse"].n_embd) == (24, 16, 1024)
    assert small["semantic"].input_vocab_size == 129_600 and small["semantic"].output_vocab_size == 10_048
    assert large["fine"].n_codes_total == 8 and large["fine"].input_vocab_size == 1056


def _decoder(model, kv: str, max_rows: int):
    import onnxruntime as ort

    from bark_onnx.runtime.engine.decoder import CausalDecoder
    from bark_onnx.export.gpt_graphs import build_causal
    from bark_onnx.runtime.sessions.session import make_placement

    proto, info = build_causal(model.cfg, model.state_dict(), "coarse", (10_000, 12_048), kv=kv)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return CausalDecoder(session, info, model.cfg, kv, make_placement(["cpu"]), max_rows=max_rows)


def test_graph_variants_agree_step_by_step(reference_models):
    """The in-place (GroupQueryAttention) and concat (standard ops) caches give the same logits."""
    model = reference_models["suno-tiny"]["coarse"]
    logits = {}
    for kv in ("inplace", "concat"):
        dec = _decoder(model, kv, 3)
        rng = np.random.default_rng(0)
        seqs = [dec.open() for _ in range(3)]
        out = [dec.prefill(seqs, rng.integers(0, 12_096, (3, 40))).logits]
        out += [dec.step(seqs, rng.integers(0, 12_096, 3)).logits for _ in range(5)]
        logits[kv] = np.stack(out)
    np.testing.assert_allclose(logits["inplace"], logits["concat"], atol=1e-5)


def test_residual_norm_fused_only_in_fp16_graphs():
    """fp16 graphs (CUDA) fuse each residual add into the LayerNorm after it (a kernel launch saved);
    fp32 graphs, and the int8/int4 graphs made from them, keep Add + LayerNormalization, which ONNX
    Runtime's CPU kernels run several times faster than SkipLayerNormalization."""
    from bark_onnx.export.factory import gpt_configs, random_gpt_state
    from bark_onnx.export.fine_graph import build_fine
    from bark_onnx.export.gpt_graphs import build_causal

    cfgs = gpt_configs("tiny")
    for dtype in (np.float16, np.float32):
        causal, _ = build_causal(cfgs["coarse"], random_gpt_state(cfgs["coarse"], 0), "coarse", (10_000, 12_048),
                                 dtype=dtype)
        fine, _ = build_fine(cfgs["fine"], random_gpt_state(cfgs["fine"], 1), 1024, dtype=dtype)
        for graph, n_layer in ((causal.graph, cfgs["coarse"].n_layer), (fine.graph, cfgs["fine"].n_layer)):
            ops = [n.op_type for n in graph.node]
            residual_norms = 2 * n_layer  # after each attention and MLP; the first LayerNorm has no residual
            fused = residual_norms if dtype == np.float16 else 0
            assert ops.count("SkipLayerNormalization") == fused
            assert ops.count("LayerNormalization") == 1 + residual_norms - fused
    with pytest.raises(ValueError, match="in-place"):
        build_causal(cfgs["coarse"], random_gpt_state(cfgs["coarse"], 0), "coarse", (10_000, 12_048), kv="concat",
                     skip_norm=True)


def test_rows_at_their_own_lengths_step_together_as_alone(reference_models):
    """Rows of different lengths in one call give, bit for bit, what each gives alone; a row between
    them that is not stepping (it keeps its prompt for a later one) rides along untouched."""
    model = reference_models["suno-tiny"]["coarse"]
    rng = np.random.default_rng(2)
    prompts = [rng.integers(0, 12_096, (1, n)) for n in (12, 31, 7)]
    tokens = rng.integers(0, 12_096, (3, 6))
    alone = []
    dec = _decoder(model, "inplace", 1)
    for p, toks in zip(prompts, tokens):
        seq = dec.open()
        alone.append([dec.prefill([seq], p).logits[0]] + [dec.step([seq], [t]).logits[0] for t in toks])
        dec.close(seq)
    dec = _decoder(model, "inplace", 4)
    a, idle, b, c = (dec.open() for _ in range(4))
    idle_prompt = rng.integers(0, 12_096, (1, 20))
    dec.prefill([idle], idle_prompt)
    movers = [a, b, c]
    together = [[dec.prefill([s], p).logits[0]] for s, p in zip(movers, prompts)]
    for t in range(7):  # c joins one step late; the idle row sits between a and b throughout
        stepping = [i for i in range(3) if (t < 6 if i < 2 else t > 0)]
        out = dec.step([movers[i] for i in stepping], [tokens[i, t - (i == 2)] for i in stepping]).logits
        for j, i in enumerate(stepping):
            together[i].append(out[j])
    for x, y in zip(alone, together):
        np.testing.assert_array_equal(np.stack(x), np.stack(y))
    longer = np.concatenate([idle_prompt, rng.integers(0, 12_096, (1, 5))], 1)
    assert dec.kept_positions(idle, longer[0], None) == 20
    kept = dec.prefill([idle], longer).logits
    assert dec.rows_in_use == 4
    dec.close(a)
    fresh = dec.open()
    np.testing.assert_array_equal(kept, dec.prefill([fresh], longer).logits)


def test_kept_prefix_equals_full_prefill(reference_models):
    """A prompt sharing its first positions with the row's previous prompt recomputes only the rest,
    and gives the logits and cache of a full prefill."""
    from bark_onnx.runtime.engine.decoder import RowsFullError

    model = reference_models["suno-tiny"]["coarse"]
    dec = _decoder(model, "inplace", 2)
    rng = np.random.default_rng(1)
    prefix, first, second = (rng.integers(0, 12_096, (1, n)) for n in (30, 25, 17))
    seq = dec.open()
    dec.prefill([seq], np.concatenate([prefix, first], 1))
    dec.step([seq], rng.integers(0, 12_096, 1))  # a step that the next prompt must forget
    prompt = np.concatenate([prefix, second], 1)
    assert dec.kept_positions(seq, prompt[0], None) == 30
    kept = dec.prefill([seq], prompt).logits
    other = dec.open()
    assert dec.kept_positions(other, prompt[0], None) == 0  # a new sequence keeps nothing
    full = dec.prefill([other], prompt).logits
    np.testing.assert_allclose(kept, full, atol=1e-5)
    for a, b in zip(dec.cache(seq, 1), dec.cache(other, 1)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(RowsFullError):
        dec.open()


def test_step_graphs_share_the_weights_of_the_full_graphs(model_dirs):
    """In-place exports carry one-token step graphs (for CUDA graphs) whose weights point into the
    full graphs' data files: a few kB on disk each, and no Shape arithmetic for the host to do."""
    import onnx

    config = ModelConfig.load(model_dirs["suno-tiny"])
    assert set(config.step_graphs) == {"semantic", "coarse"}
    assert not ModelConfig.load(model_dirs["hf-mini"]).step_graphs  # concat caches have none
    for stage, info in config.step_graphs.items():
        path = model_dirs["suno-tiny"] / info.file
        assert path.stat().st_size < 64_000
        graph = onnx.load(str(path), load_external_data=False).graph
        places = {e.value for t in graph.initializer for e in t.external_data if e.key == "location"}
        assert places == {config.graphs[stage].file + ".data"}
        ops = {n.op_type for n in graph.node}
        assert not ops & {"Shape", "Range", "Slice"}  # no shape computed on the host: the step is capturable
        assert "ReduceMax" not in {n.op_type for n in graph.node if not n.name.startswith("/draw/")}  # no lengths
