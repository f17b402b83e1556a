"""Checkpoint loading: both layouts, agreement with transformers, and clear errors for bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from bark_onnx.runtime.errors import CheckpointError
from bark_onnx.export.checkpoints import load_checkpoint
from bark_onnx.export.exporter import export_model
from bark_onnx.export.factory import write_checkpoint
from bark_onnx.export.models import build_models

from .conftest import TINY


def test_both_layouts_of_the_same_weights_give_the_same_models(tmp_path):
    suno = build_models(load_checkpoint(str(write_checkpoint(tmp_path / "s", "suno", TINY, seed=7))))
    hf = build_models(load_checkpoint(str(write_checkpoint(tmp_path / "h", "hf", TINY, seed=7))))
    for stage in ("semantic", "coarse", "fine", "codec"):
        a, b = suno[stage].state_dict(), hf[stage].state_dict()
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=f"{stage} {key}")


def test_reference_matches_transformers_bark(checkpoints, reference_models):
    """Our PyTorch reference equals transformers' BarkModel on the same HF checkpoint."""
    from transformers import BarkModel

    hf = BarkModel.from_pretrained(str(checkpoints["hf-mini"])).eval()
    ours = reference_models["hf-mini"]
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(0, 12_096, (2, 50)))
    with torch.no_grad():
        ref = hf.coarse_acoustics(input_ids=ids).logits
        got, _ = ours["coarse"](ids, last_only=False)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    codes = torch.from_numpy(rng.integers(0, 1024, (2, 64, 8)))
    with torch.no_grad():
        ref = hf.fine_acoustics(3, codes).logits
        got = ours["fine"](3, codes)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    codes = torch.from_numpy(rng.integers(0, 1024, (1, 8, 30)))
    with torch.no_grad():
        ref = hf.codec_model.decode(codes[None], [None]).audio_values[:, 0]
        got = ours["codec"](codes)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_codec_layouts_and_weight_norm_forms(tmp_path):
    """EnCodec from the encodec package (.th), the HF layout, and HF's parametrized weight norm."""
    a = load_checkpoint(str(write_checkpoint(tmp_path / "a", "suno", TINY, seed=3)))
    b = load_checkpoint(str(write_checkpoint(tmp_path / "b", "hf", TINY, seed=3, parametrized_codec=True)))
    for key, value in a.codec_weights.items():
        torch.testing.assert_close(value, b.codec_weights[key], rtol=0, atol=1e-6)
    assert a.codec_weights["codebooks"].shape == (8, 1024, 128)


def test_suno_legacy_vocab_size_and_orig_mod_prefix(tmp_path):
    root = write_checkpoint(tmp_path / "s", "suno", TINY)
    ckpt = torch.load(root / "coarse.pt", weights_only=False)
    args = ckpt["model_args"]
    args["vocab_size"] = args.pop("input_vocab_size")
    args.pop("output_vocab_size")
    ckpt["model"] = {"_orig_mod." + k: v for k, v in ckpt["model"].items()}
    torch.save(ckpt, root / "coarse.pt")
    source = load_checkpoint(str(root))
    assert source.configs["coarse"].input_vocab_size == source.configs["coarse"].output_vocab_size == 12_096
    build_models(source)


def test_hf_checkpoint_without_tied_heads(tmp_path):
    """HF may store the fine model's tied heads only once; either copy is enough."""
    from safetensors.torch import load_file, save_file

    root = write_checkpoint(tmp_path / "h", "hf", TINY)
    state = load_file(str(root / "model.safetensors"))
    state = {k: v for k, v in state.items() if not k.startswith("fine_acoustics.lm_heads.")}
    save_file(state, str(root / "model.safetensors"))
    build_models(load_checkpoint(str(root)))


def _export(path, tmp_path):
    return export_model(str(path), tmp_path / "out", progress=False, report=lambda s: None)


def test_missing_key_is_named(tmp_path):
    root = write_checkpoint(tmp_path / "s", "suno", TINY)
    ckpt = torch.load(root / "fine.pt", weights_only=False)
    del ckpt["model"]["transformer.h.1.mlp.c_fc.weight"]
    torch.save(ckpt, root / "fine.pt")
    with pytest.raises(CheckpointError, match=r"fine model.*missing keys: transformer\.h\.1\.mlp\.c_fc\.weight"):
        _export(root, tmp_path)
    assert not (tmp_path / "out").exists()


def test_extra_key_is_named(tmp_path):
    root = write_checkpoint(tmp_path / "s", "suno", TINY)
    ckpt = torch.load(root / "text.pt", weights_only=False)
    ckpt["model"]["transformer.h.0.attn.rotary"] = torch.zeros(3)
    torch.save(ckpt, root / "text.pt")
    with pytest.raises(CheckpointError, match=r"unexpected keys: transformer\.h\.0\.attn\.rotary"):
        _export(root, tmp_path)


def test_wrong_shape_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    root = write_checkpoint(tmp_path / "h", "hf", TINY)
    state = load_file(str(root / "model.safetensors"))
    state["semantic.layers.0.mlp.in_proj.weight"] = torch.zeros(10, 64)
    save_file(state, str(root / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"wrong shapes: transformer\.h\.0\.mlp\.c_fc\.weight \(10, 64\)"):
        _export(root, tmp_path)


def test_unknown_layout_and_missing_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="unknown checkpoint layout"):
        load_checkpoint(str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match="no such file or directory"):
        load_checkpoint(str(tmp_path / "nope" / "dir"))
    (tmp_path / "weights.npz").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown checkpoint file"):
        load_checkpoint(str(tmp_path / "weights.npz"))
    root = write_checkpoint(tmp_path / "h", "hf", TINY)
    cfg = json.loads((root / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (root / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="expected 'bark'"):
        load_checkpoint(str(root))


def test_corrupt_and_hostile_pt_files_are_refused(tmp_path):
    root = write_checkpoint(tmp_path / "s", "suno", TINY)
    (root / "coarse.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="coarse.pt: cannot read it as a PyTorch checkpoint"):
        load_checkpoint(str(root))
    # A pickle that would run code is refused, not executed.
    torch.save({"model_args": {}, "model": {}, "payload": shutil.rmtree}, root / "coarse.pt")
    with pytest.raises(CheckpointError, match="cannot read it as a PyTorch checkpoint"):
        load_checkpoint(str(root))


def test_missing_codec_and_tokenizer_say_what_to_pass(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no cached copies to fall back on
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    root = write_checkpoint(tmp_path / "s", "suno", TINY)
    (root / "encodec_24khz-d7cc33bc.th").unlink()
    with pytest.raises(CheckpointError, match="--codec"):
        load_checkpoint(str(root))
    root = write_checkpoint(tmp_path / "t", "suno", TINY)
    (root / "vocab.txt").unlink()
    with pytest.raises(CheckpointError, match="--tokenizer"):
        load_checkpoint(str(root))
