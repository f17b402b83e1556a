"""The price of a precision (fp16, int8, int4), per stage: greedy agreement with fp32 and the logit error.

Teacher-forced: both graphs see the same inputs (the fp32 model's own greedy
tokens), so one early disagreement does not make every later token differ.
The fp32 reference runs on the CPU provider; the other model where the
benchmark runs it (fp16 on CUDA: the price of fp16 on the GPU).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bark_onnx import Bark
from bark_onnx.runtime.constants import COARSE_INFER_TOKEN, SEMANTIC_INFER_TOKEN
from bark_onnx.runtime.sessions.providers import short

from .workload import TEXT


def _causal(fp32: Bark, other: Bark, stage: str, prompt: np.ndarray, merge: np.ndarray | None, steps: int):
    dec_a, dec_b = fp32.decoders[stage], other.decoders[stage]
    seq_a, seq_b = dec_a.open(), dec_b.open()
    la, lb = dec_a.prefill([seq_a], prompt, merge).logits, dec_b.prefill([seq_b], prompt, merge).logits
    agree, err = [], []
    for _ in range(steps):
        agree.append(la.argmax(-1) == lb.argmax(-1))
        err.append(np.abs(la - lb).max())
        token = la.argmax(-1) + dec_a.info.logits_start
        la, lb = dec_a.step([seq_a], token).logits, dec_b.step([seq_b], token).logits
    dec_a.close(seq_a)
    dec_b.close(seq_b)
    return {"agreement": float(np.mean(agree)), "max_logit_error": float(np.max(err))}


def measure(fp32_dir: Path, other_dir: Path, steps: int = 100, providers=None) -> dict[str, dict]:
    a, b = Bark.load(fp32_dir, providers=["cpu"]), Bark.load(other_dir, providers=providers)
    rng = np.random.default_rng(0)
    text = a.text.encode(TEXT)
    history = np.full(256, 10_000)
    semantic = _causal(a, b, "semantic", np.concatenate([text, [SEMANTIC_INFER_TOKEN]])[None],
                       np.concatenate([history, [a.config.graphs["semantic"].merge_none_id]])[None], steps)
    prompt = np.concatenate([rng.integers(0, 10_000, 256), [COARSE_INFER_TOKEN], rng.integers(10_000, 12_048, 300)])
    coarse = _causal(a, b, "coarse", prompt[None], None, steps)
    codes = rng.integers(0, 1024, (1, 1024, 8))
    agree, err = [], []
    for nn in range(2, 8):
        feed = {"codes": codes, "pred_idx": np.array(nn), "temperature": np.zeros(1, np.float32),
                "uniform": np.zeros(codes.shape[:2], np.float32)}
        la, lb = a.sessions["fine"].run(["logits"], feed)[0], b.sessions["fine"].run(["logits"], feed)[0]
        agree.append(np.mean(la.argmax(-1) == lb.argmax(-1)))
        err.append(np.abs(la - lb).max())
    fine = {"agreement": float(np.mean(agree)), "max_logit_error": float(np.max(err))}
    runs_on = "+".join(short(p) for p in b.placement.running)
    return {"semantic": semantic, "coarse": coarse, "fine": fine, "runs_on": runs_on}
