"""Check every graph of a model directory against the PyTorch reference.

- semantic / coarse: a prefill on random tokens, then 20 one-token steps
  through the KV cache; logits and the cache itself against a full
  recomputation in PyTorch.
- fine: every codebook index on a random 1024-frame window.
- codec: several lengths of random codes.
The errors are the largest absolute and relative (to the reference's largest
magnitude) differences per output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bark_onnx.runtime import constants as C
from bark_onnx.runtime.model.config import ModelConfig
from bark_onnx.runtime.engine.decoder import CausalDecoder
from bark_onnx.runtime.errors import BarkOnnxError
from bark_onnx.runtime.sessions.session import create_session, make_placement

# Largest absolute error accepted per precision (logits, cache and audio).
TOLERANCE = {"fp32": 1e-4, "fp16": 5e-2, "int8": None, "int4": None}
N_STEPS = 20


class ValidationError(BarkOnnxError):
    """An exported graph differs from PyTorch by more than the tolerance."""


@dataclass
class Check:
    graph: str
    output: str
    max_abs: float
    max_rel: float
    tolerance: float | None

    @property
    def ok(self) -> bool:
        return self.tolerance is None or self.max_abs <= self.tolerance

    def __str__(self) -> str:
        limit = "not checked" if self.tolerance is None else f"tolerance {self.tolerance:.0e}"
        mark = "ok" if self.ok else "FAILED"
        return (f"{self.graph:9s} {self.output:22s} max abs {self.max_abs:.2e}  max rel {self.max_rel:.2e}"
                f"  ({limit}) {mark}")


def _compare(graph: str, output: str, got, ref, tol) -> Check:
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        raise ValidationError(f"{graph}: output {output} has shape {got.shape}, PyTorch gives {ref.shape}")
    err = float(np.abs(got - ref).max()) if got.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    return Check(graph, output, err, err / scale if scale else err, tol)


def _causal_inputs(stage: str, rng: np.random.Generator, batch: int):
    """Random first-step tokens: (torch input, graph input_ids, graph merge_ids)."""
    if stage == "semantic":
        text = rng.integers(C.TEXT_ENCODING_OFFSET, C.TEXT_ENCODING_OFFSET + 1000, (batch, 256))
        hist = rng.integers(0, C.SEMANTIC_VOCAB_SIZE, (batch, 256))
        infer = np.full((batch, 1), C.SEMANTIC_INFER_TOKEN)
        return np.concatenate([text, hist, infer], 1), np.concatenate([text, infer], 1), hist
    semantic = rng.integers(0, C.SEMANTIC_VOCAB_SIZE, (batch, 256))
    coarse = rng.integers(C.SEMANTIC_VOCAB_SIZE, C.SEMANTIC_VOCAB_SIZE + 2 * C.CODEBOOK_SIZE, (batch, 300))
    ids = np.concatenate([semantic, np.full((batch, 1), C.COARSE_INFER_TOKEN), coarse], 1)
    return ids, ids, None


def check_causal(stage: str, decoder: CausalDecoder, model: torch.nn.Module, tol, seed: int = 0) -> list[Check]:
    """Two rows prefilled at once, then stepped together; each against a full PyTorch recomputation."""
    rng = np.random.default_rng(seed)
    batch = 2
    full, ids, hist = _causal_inputs(stage, rng, batch)
    merge = stage == "semantic"
    info = decoder.info
    cols = slice(info.logits_start, info.logits_start + info.logits_size)
    seqs = [decoder.open() for _ in range(batch)]
    if merge:
        none = np.full((batch, 1), info.merge_none_id)
        got = decoder.prefill(seqs, ids, np.concatenate([hist, none], 1)).logits
    else:
        got = decoder.prefill(seqs, ids).logits
    with torch.no_grad():
        ref, _ = model(torch.from_numpy(full), merge_context=merge)
    checks = [_compare(stage, "logits (prefill)", got, ref[:, -1, cols].numpy(), tol)]
    seq = torch.from_numpy(full)
    vocab = C.SEMANTIC_VOCAB_SIZE if merge else C.SEMANTIC_VOCAB_SIZE + 2 * C.CODEBOOK_SIZE
    worst = None
    for _ in range(N_STEPS):
        token = rng.integers(0, vocab, (batch, 1))
        got = decoder.step(seqs, token[:, 0]).logits
        seq = torch.cat([seq, torch.from_numpy(token)], 1)
        with torch.no_grad():
            ref, kv = model(seq, merge_context=merge)  # full recomputation, no cache
        step = _compare(stage, f"logits ({N_STEPS} steps)", got, ref[:, -1, cols].numpy(), tol)
        worst = step if worst is None or step.max_abs > worst.max_abs else worst
    checks.append(worst)
    last = decoder.cfg.n_layer - 1
    caches = [decoder.cache(s, last) for s in seqs]
    k, v = (np.concatenate([c[j] for c in caches]) for j in (0, 1))
    checks.append(_compare(stage, f"present_key.{last}", k, kv[last][0].numpy(), tol))
    checks.append(_compare(stage, f"present_value.{last}", v, kv[last][1].numpy(), tol))
    for s in seqs:
        decoder.close(s)
    return checks


def check_fine(session, model: torch.nn.Module, n_logits: int, tol, seed: int = 0) -> list[Check]:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, C.CODEBOOK_SIZE, (2, C.FINE_WINDOW, model.cfg.n_codes_total))
    checks = []
    for pred_idx in range(model.cfg.n_codes_given, model.cfg.n_codes_total):
        got = session.run(["logits"], {"codes": codes, "pred_idx": np.array(pred_idx, dtype=np.int64),
                                       "temperature": np.zeros(2, np.float32),
                                       "uniform": np.zeros(codes.shape[:2], np.float32)})[0]
        with torch.no_grad():
            ref = model(pred_idx, torch.from_numpy(codes))[..., :n_logits].numpy()
        checks.append(_compare("fine", f"logits (codebook {pred_idx})", got, ref, tol))
    return checks


def check_codec(session, model: torch.nn.Module, tol, seed: int = 0, lengths=(1, 7, 75, 500)) -> list[Check]:
    rng = np.random.default_rng(seed)
    checks = []
    for frames in lengths:
        codes = rng.integers(0, C.CODEBOOK_SIZE, (2, model.cfg.n_codebooks, frames))
        got = session.run(None, {"codes": codes})[0]
        with torch.no_grad():
            ref = model(torch.from_numpy(codes)).numpy()
        checks.append(_compare("codec", f"audio ({frames} frames)", got, ref, tol))
    return checks


def validate_model_dir(model_dir: Path, models: dict[str, torch.nn.Module], providers=None) -> list[Check]:
    """Run every check; returns them all (callers decide what a failure means)."""
    config = ModelConfig.load(model_dir)
    tol = TOLERANCE[config.precision]
    placement = make_placement(providers)
    sessions = {name: create_session(Path(model_dir) / config.graphs[name].file, placement)
                for name in ("semantic", "coarse", "fine", "codec")}
    checks = []
    for stage in ("semantic", "coarse"):
        decoder = CausalDecoder(sessions[stage], config.graphs[stage], getattr(config, stage), config.kv_cache, placement,
                                max_rows=2)
        checks += check_causal(stage, decoder, models[stage], tol)
    checks += check_fine(sessions["fine"], models["fine"], config.graphs["fine"].logits_size, tol)
    checks += check_codec(sessions["codec"], models["codec"], tol)
    return checks
