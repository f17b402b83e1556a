"""Build the PyTorch reference modules from a checkpoint, checking every key and shape."""

from __future__ import annotations

import torch
from torch import nn

from bark_onnx.runtime.errors import CheckpointError

from .checkpoints import BarkSource
from .encodec import EncodecDecoder
from .gpt import CausalGPT, FineGPT


def load_state(module: nn.Module, state: dict[str, torch.Tensor], where: str) -> nn.Module:
    """Load `state` into `module`; one error naming missing, extra and mis-shaped keys."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    shapes = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", extra), ("wrong shapes", shapes)):
        if items:
            problems.append(f"{label}: {', '.join(items[:5])}" + (f" and {len(items) - 5} more" if len(items) > 5 else ""))
    if problems:
        raise CheckpointError(f"{where} does not match its config; " + "; ".join(problems))
    module.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    return module.eval()


def build_models(source: BarkSource) -> dict[str, nn.Module]:
    """The four reference modules (semantic, coarse, fine, codec) with the source's weights."""
    models: dict[str, nn.Module] = {}
    where = source.info.get("checkpoint", "checkpoint")
    for stage in ("semantic", "coarse", "fine"):
        cfg = source.configs[stage]
        module = FineGPT(cfg) if cfg.is_fine else CausalGPT(cfg)
        models[stage] = load_state(module, source.weights[stage], f"{where} ({stage} model)")
    codec = EncodecDecoder(source.codec_config)
    models["codec"] = load_state(codec, source.codec_weights, f"{source.info.get('codec', where)} (EnCodec decoder)")
    return models
