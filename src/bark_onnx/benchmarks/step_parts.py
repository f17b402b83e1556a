"""Where one decoding step's time goes, on one model directory.

    python -m bark_onnx.benchmarks.step_parts MODEL_DIR --providers cuda,cpu [--max-batch 1] [--steps 600]

Times, per step (mean over `--steps` calls in a loop, after one untimed call), milliseconds:
- the coarse decoder's step for one sequence at 300 cached positions (`decoder.step`: the token and
  past length to the device, the graph call, the logits row back), and where the step-only graph
  is in use, its replay alone and the logits' copy to the host alone;
- sampling one row at temperature 0.7 over 1024 columns (a coarse step) and 10 000 (a semantic step);
- a semantic token through the whole engine (`text_to_semantic`, 650 tokens, EOS off).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .report import print_json
from .workload import SEGMENT, TEXT

PAST = 300


def _per_call_ms(fn, calls: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t) / calls * 1e3


def measure(model_dir: Path, providers=None, max_batch: int = 1, steps: int = 600) -> dict:
    from bark_onnx import Bark
    from bark_onnx.kernels.sampling import sample

    tts = Bark.load(model_dir, providers=providers, max_batch=max_batch)
    try:
        decoder = tts.decoders["coarse"]
        seq = decoder.open()
        decoder.prefill([seq], np.random.default_rng(0).integers(10_000, 12_000, (1, PAST)))
        token = np.array([10_001])
        ms: dict[str, float] = {}
        fixed = decoder.fixed
        if fixed is not None:
            ms["replay"] = _per_call_ms(lambda: fixed.session.run_with_iobinding(fixed.binding), steps)
            ms["logits_to_host"] = _per_call_ms(lambda: fixed.outputs["logits"].numpy(), steps)

        def step():
            decoder.length[seq.row] = PAST  # every call writes the same position: the cache never fills
            decoder.step([seq], token)

        ms["decoder_step"] = _per_call_ms(step, steps)
        decoder.close(seq)
        rng = np.random.default_rng(0)
        for columns in (1024, 10_000):
            logits = rng.normal(size=(1, columns)).astype(np.float32)
            ms[f"sample_{columns}"] = _per_call_ms(lambda: sample(logits, 0.7, rng.random(1)), steps)
        t = time.perf_counter()
        tokens = tts.text_to_semantic(TEXT, temperature=0.7, seed=0, max_gen_duration_s=SEGMENT.max_gen_duration_s,
                                      allow_early_stop=False, silent=True)
        ms["engine_per_semantic_token"] = (time.perf_counter() - t) / len(tokens) * 1e3
        return {"providers": tts.active_providers(), "max_batch": max_batch, "step_graph_in_use": fixed is not None,
                "semantic_tokens": len(tokens), "ms": ms}
    finally:
        tts.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bark_onnx.benchmarks.step_parts", description=__doc__.split("\n")[0])
    p.add_argument("model_dir")
    p.add_argument("--providers", help="e.g. cuda,cpu")
    p.add_argument("--max-batch", type=int, default=1, help="rows of the engine's caches (a CUDA step covers all)")
    p.add_argument("--steps", type=int, default=600, help="calls timed per part")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.max_batch < 1 or args.steps < 1:
        p.error("--max-batch and --steps must be at least 1")
    results = measure(Path(args.model_dir), args.providers.split(",") if args.providers else None, args.max_batch,
                      args.steps)
    print_json(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
