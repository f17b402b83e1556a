"""What each row's token costs the host: `bark-onnx bench host`.

The small test model (`--size tiny`: 2 layers, 64 wide), whose graph time is small, so what
shows is the work around it: the draws, the bookkeeping, the engine's Python. N seeded
`text_to_semantic` requests of 200 tokens (EOS off) run at once on one model with N rows, for
N = 1, 8 and 32 (one `text_to_semantic` call with N texts); the figure is microseconds per row and
token, wall time / (N x 200), median and range of the rounds after a warm-up. `--draws graph,host` measures both places a token can be drawn:
in the graph (the default) and on the host from the logits (NumPy, the same float32 rule), and
checks that the first request's tokens are the same at every level, alone and among others.

    bark-onnx bench host [--levels 1,8,32] [--tokens 200] [--rounds 5] [--draws graph,host]
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from bark_onnx.kernels.sampling import draw_rows
from bark_onnx.runtime.engine.decoder import Draw
from bark_onnx.runtime.engine.runs import Runs
from bark_onnx.runtime.stages.semantic import duration_for_tokens

from .report import cpu_flags
from .workload import TEXT

LEVELS = (1, 8, 32)
DRAWS = ("graph", "host")


class HostDrawnRuns(Runs):
    """Runs whose every draw is made on the host from the logits (NumPy, the graph's float32 rule)
    instead of in the graph: the same tokens but at CDF edges, for measuring which is faster."""

    def draws(self, rows: np.ndarray) -> Draw:
        draw = super().draws(rows)
        return Draw(np.zeros_like(draw.temperature), draw.uniform, draw.band)  # temperature 0: the raw logits

    def drawn(self, rows, out, draw):
        token, eos_p = draw_rows(out.logits, self.temperature[rows], draw.uniform, self.ranges[draw.band],
                                 self.eos_column)
        return token + self.start, eos_p


def _round(tts, n: int, tokens: int) -> tuple[float, list[np.ndarray]]:
    """n requests at once (a list is several requests, each with its own child seed); (seconds, tokens)."""
    texts = [f"{TEXT} ({i})" for i in range(n)]
    t0 = time.perf_counter()
    out = tts.text_to_semantic(texts, seed=0, max_gen_duration_s=duration_for_tokens(tokens),
                               allow_early_stop=False, silent=True)
    return time.perf_counter() - t0, out


def measure(model_dir: Path, levels=LEVELS, tokens: int = 200, rounds: int = 5, draws=DRAWS,
            threads: int | None = None) -> dict:
    """{"levels": {draws: {n: {"us_per_row_token": median, "min", "max", "rounds"}}}, "same_tokens": ...}."""
    from bark_onnx import Bark

    tts = Bark.load(model_dir, providers=["cpu"], threads=threads, max_batch=max(levels), max_queue=0)
    try:
        results: dict = {}
        firsts: dict[str, np.ndarray] = {}  # the first request's tokens (its seed is the same at every level)
        same = True
        for where in draws:
            runs = HostDrawnRuns if where == "host" else Runs
            executor = tts.engine.executor  # between requests, so its runs may be swapped
            executor.runs = {stage: runs(decoder) for stage, decoder in executor.decoders.items()}
            _round(tts, 1, 20)  # warm-up: sessions, arenas, bindings
            results[where] = {}
            for n in levels:
                _round(tts, n, tokens)  # warm-up of this batch shape
                per = []
                for _ in range(rounds):
                    seconds, out = _round(tts, n, tokens)
                    per.append(seconds / (n * tokens) * 1e6)
                    firsts.setdefault(where, out[0])
                    same = same and np.array_equal(out[0], firsts[where])
                results[where][n] = {"us_per_row_token": statistics.median(per), "min": min(per), "max": max(per),
                                     "rounds": per}
        agree = None
        if len(firsts) == 2:
            a, b = firsts.values()
            agree = float(np.mean(a == b))
        return {"model": str(model_dir), "tokens": tokens, "cpu_flags": cpu_flags(), "threads": threads,
                "levels": results, "same_tokens_alone_and_together": same, "graph_vs_host_token_agreement": agree}
    finally:
        tts.close()


def edge_rate(model_dir: Path, pairs: int = 16, steps: int = 640, temperature: float = 0.7,
              threads: int | None = None) -> dict:
    """How often the graph's float32 draw and Bark's float64 rule on the host take different tokens
    for the same uniform number, on a long run of the semantic graph.

    Rows come in pairs fed the same tokens, so their arithmetic is the same: one draws in the graph
    at `temperature`, the other (temperature 0) gives the raw logits, from which the host draws
    with the same uniform number (kernels' `sample`, float64)."""
    from bark_onnx import Bark
    from bark_onnx.kernels.sampling import sample
    from bark_onnx.runtime.constants import SEMANTIC_INFER_TOKEN

    tts = Bark.load(model_dir, providers=["cpu"], threads=threads, max_batch=2 * pairs)
    try:
        dec = tts.decoders["semantic"]
        rng = np.random.default_rng(0)
        seqs = [dec.open() for _ in range(2 * pairs)]
        prompt = np.repeat(rng.integers(10_048, 20_000, (pairs, 257)), 2, axis=0)
        prompt[:, -1] = SEMANTIC_INFER_TOKEN
        merge = [np.full(257, dec.info.merge_none_id)] * len(seqs)
        t = np.tile(np.array([temperature, 0], np.float32), pairs)
        differ = total = 0
        u = rng.random(pairs)
        out = dec.prefill(seqs, prompt, merge, Draw(t, np.repeat(u, 2).astype(np.float32), np.zeros(len(seqs), np.int64)))
        for _ in range(steps):
            host = sample(out.logits[1::2], temperature, u)[0]  # Bark's rule on the raw logits
            device = out.token[0::2]
            differ += int((host != device).sum())
            total += pairs
            u = rng.random(pairs)
            draw = Draw(t, np.repeat(u, 2).astype(np.float32), np.zeros(len(seqs), np.int64))
            out = dec.step(seqs, np.repeat(device, 2), draw)
        return {"draws": total, "differ": differ, "rate": differ / total, "temperature": temperature}
    finally:
        tts.close()


def table(result: dict) -> str:
    levels = sorted({n for per in result["levels"].values() for n in per}, key=int)
    lines = ["draws | " + " | ".join(f"{n} at once" for n in levels), "---|" + "---|" * len(levels)]
    for where, per in result["levels"].items():
        cells = [f"{per[n]['us_per_row_token']:.1f} ({per[n]['min']:.1f}-{per[n]['max']:.1f})" for n in levels]
        lines.append(f"{where} | " + " | ".join(cells))
    return "\n".join(lines)
