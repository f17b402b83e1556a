"""EnCodec 24 kHz weights from the `encodec` package's checkpoint or the Hugging Face layout.

Keys are renamed onto encodec.py's modules and weight norm (weight_g /
weight_v, or HF's parametrizations) is folded into plain weights.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from bark_onnx.runtime.model.config import CodecConfig
from bark_onnx.runtime.errors import CheckpointError

from .weights import find_hf_weights, hub_snapshot, load_weight_file, looks_like_hub_id, read_json

CODEC_HUB_ID = "facebook/encodec_24khz"


def codec_config_from_hf(cfg: dict, where: str) -> CodecConfig:
    fixed = {"use_causal_conv": True, "norm_type": "weight_norm", "pad_mode": "reflect",
             "trim_right_ratio": 1.0, "use_conv_shortcut": True, "audio_channels": 1}
    odd = {k: cfg[k] for k, v in fixed.items() if k in cfg and cfg[k] != v}
    if odd:
        raise CheckpointError(f"{where}: unsupported EnCodec variant {odd}; Bark uses the causal 24 kHz model")
    keys = ("hidden_size", "num_filters", "upsampling_ratios", "num_residual_layers", "kernel_size",
            "last_kernel_size", "residual_kernel_size", "dilation_growth_rate", "compress",
            "num_lstm_layers", "codebook_size")
    return CodecConfig(**{k: cfg[k] for k in keys if k in cfg})


def _fold_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # w = g * v / ||v||, the norm taken over every dim but 0 (torch's weight_norm, dim=0)
    norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
    return g * v / norm


def codec_state_to_ours(state: dict, n_codebooks: int, where: str) -> dict:
    """EnCodec weights from the `encodec` package or the HF layout -> encodec.py names."""
    renamed: dict[str, torch.Tensor] = {}
    codebooks: dict[int, torch.Tensor] = {}
    for key, value in state.items():
        m = re.match(r"^quantizer\.(?:vq\.)?layers\.(\d+)\.(?:_codebook|codebook)\.embed$", key)
        if m:
            codebooks[int(m.group(1))] = value
            continue
        if not key.startswith("decoder."):
            continue  # encoder and quantizer statistics are not needed to decode
        key = re.sub(r"^decoder\.(model|layers)\.", "layers.", key)
        key = key.replace(".conv.conv.", ".conv.").replace(".convtr.convtr.", ".conv.")
        key = key.replace(".parametrizations.weight.original0", ".weight_g")
        key = key.replace(".parametrizations.weight.original1", ".weight_v")
        renamed[key] = value
    out = {}
    for key, value in renamed.items():
        if key.endswith(".weight_g"):
            base = key[: -len("_g")]
            if base + "_v" not in renamed:
                raise CheckpointError(f"{where}: {key} has no matching weight_v")
            out[base] = _fold_weight_norm(value, renamed[base + "_v"])
        elif not key.endswith(".weight_v"):
            out[key] = value
    missing = [i for i in range(n_codebooks) if i not in codebooks]
    if missing:
        raise CheckpointError(f"{where}: missing EnCodec codebooks {missing} (need {n_codebooks} for 6 kbps)")
    out["codebooks"] = torch.stack([codebooks[i] for i in range(n_codebooks)])
    return out


def find_codec(root: Path | None, explicit: str | None) -> tuple[CodecConfig, dict, str]:
    """EnCodec 24 kHz: explicit path/hub id, a file beside the checkpoint, torch hub's cache, the HF hub."""
    candidates: list[str] = []
    if explicit:
        candidates.append(explicit)
    if root is not None:
        candidates += [str(p) for p in sorted(root.glob("encodec_24khz*.th"))]
        if (root / "encodec").is_dir():
            candidates.append(str(root / "encodec"))
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    candidates += [str(p) for p in sorted((torch_home / "hub" / "checkpoints").glob("encodec_24khz*.th"))]
    candidates.append(CODEC_HUB_ID)
    tried = []
    for cand in candidates:
        path = Path(cand)
        if path.is_file():
            cfg = CodecConfig()
            return cfg, codec_state_to_ours(load_weight_file(path), cfg.n_codebooks, str(path)), str(path)
        if path.is_dir():
            cfg = codec_config_from_hf(read_json(path / "config.json"), str(path / "config.json"))
            weights = find_hf_weights(path)
            return cfg, codec_state_to_ours(load_weight_file(weights), cfg.n_codebooks, str(weights)), str(path)
        if cand == explicit and not looks_like_hub_id(cand):
            raise CheckpointError(f"--codec {cand!r}: no such file or directory")
        local = hub_snapshot(cand, ["config.json", "*.safetensors", "*.bin", "*.json"], required=False)
        if local is not None:
            return find_codec(None, str(local))
        tried.append(cand)
    raise CheckpointError(
        "no EnCodec 24 kHz checkpoint found (tried: " + ", ".join(tried) + "); pass --codec with the "
        "encodec package's encodec_24khz-d7cc33bc.th or a Hugging Face facebook/encodec_24khz directory"
    )
