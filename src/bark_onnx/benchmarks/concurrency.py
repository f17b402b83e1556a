"""Many requests on one model: throughput and time to first audio against the same requests in a row.

`bark-onnx bench concurrency` (a process per precision, so each peak memory is its own):

- semantic: N `text_to_semantic` calls from N threads at once, against the same N one after another
  (tokens per second, and whether every result equals its sequential twin);
- generation: N streamed requests submitted at once (audio seconds per wall second, time to first
  audio p50/p95), against the same N one after another; the tokens of every stage compared too;
- memory: one request alone and `max(levels)` at once, each in a fresh process (its own VmHWM).

Requests are fixed: EOS off and a set number of semantic tokens, so every run does the same work.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bark_onnx.runtime.files import write_atomic
from bark_onnx.runtime.stages.semantic import duration_for_tokens

from .report import write_json
from .workload import TEXT

LEVELS = (1, 2, 4, 8)


def _requests(n: int, tokens: int) -> list[dict]:
    return [dict(text=f"{TEXT} ({i})", seed=i, max_gen_duration_s=duration_for_tokens(tokens),
                 allow_early_stop=False) for i in range(n)]


def _percentile(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def _semantic(tts, requests: list[dict], concurrent: bool):
    def one(r):
        return tts.text_to_semantic(r["text"], seed=r["seed"], max_gen_duration_s=r["max_gen_duration_s"],
                                    allow_early_stop=False, silent=True)

    t0 = time.perf_counter()
    if concurrent:
        with ThreadPoolExecutor(len(requests)) as pool:
            out = list(pool.map(one, requests))
    else:
        out = [one(r) for r in requests]
    return out, time.perf_counter() - t0


def _generate(tts, requests: list[dict], concurrent: bool):
    """Streamed requests; returns (generations, wall seconds, first-chunk seconds per request)."""
    t0 = time.perf_counter()
    results, firsts = [], []
    if concurrent:
        jobs = [tts.stream(r["text"], seed=r["seed"], max_gen_duration_s=r["max_gen_duration_s"],
                           allow_early_stop=False) for r in requests]
        results = [job.result() for job in jobs]
        firsts = [job.first_chunk_s for job in jobs]
    else:
        for r in requests:
            job = tts.stream(r["text"], seed=r["seed"], max_gen_duration_s=r["max_gen_duration_s"],
                             allow_early_stop=False)
            results.append(job.result())
            firsts.append(job.first_chunk_s)
    return results, time.perf_counter() - t0, firsts


def _same(a, b) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("semantic", "coarse", "fine", "audio"))


def measure(model_dir: Path, levels=LEVELS, tokens: int = 200, semantic_tokens: int = 650,
            threads: int | None = None, providers=None, batches: dict | None = None) -> dict:
    from bark_onnx import Bark

    top = max(levels)
    tts = Bark.load(model_dir, providers=providers, threads=threads, max_batch=top, **(batches or {}))
    _generate(tts, _requests(1, 20), False)  # warm-up of every stage
    _semantic(tts, _requests(2, semantic_tokens), True)
    out = {"levels": list(levels), "tokens": tokens, "fine_batch": tts.engine.executor.fine_batch,
           "codec_batch": tts.engine.executor.codec_batch,
           "semantic": {}, "generation": {}}

    sem_requests = _requests(top, semantic_tokens)
    seq, seq_s = _semantic(tts, sem_requests, False)
    for n in levels:
        conc, conc_s = _semantic(tts, sem_requests[:n], True)
        seq_n = seq_s * n / top  # the sequential requests are identical in work: time scales with n
        out["semantic"][n] = {"tokens_per_s": n * semantic_tokens / conc_s,
                              "sequential_tokens_per_s": n * semantic_tokens / seq_n,
                              "speedup": seq_n / conc_s,
                              "equal": all(np.array_equal(a, b) for a, b in zip(seq, conc))}

    gen_requests = _requests(top, tokens)
    seq, seq_s, seq_first = _generate(tts, gen_requests, False)
    one_s = seq_s / top  # identical work per request
    for n in levels:
        conc, conc_s, firsts = _generate(tts, gen_requests[:n], True)
        audio_s = sum(len(g.audio) for g in conc) / tts.sample_rate
        out["generation"][n] = {
            "audio_s_per_s": audio_s / conc_s, "sequential_audio_s_per_s": audio_s / (one_s * n),
            "speedup": one_s * n / conc_s, "wall_s": conc_s,
            "first_audio_p50_s": _percentile(firsts, 50), "first_audio_p95_s": _percentile(firsts, 95),
            "sequential_first_audio_p50_s": _percentile(seq_first[:n], 50),
            "equal": all(_same(a, b) for a, b in zip(seq, conc)),
        }
    tts.close()
    return out


def _peak(model_dir: Path, n: int, tokens: int, threads: int | None, providers=None,
          batches: dict | None = None) -> float:
    """VmHWM of a process that loads the model and runs `n` requests at once (run it in a fresh one)."""
    from bark_onnx import Bark

    from .worker import _peak_rss_mb

    tts = Bark.load(model_dir, providers=providers, threads=threads, max_batch=max(n, 1), **(batches or {}))
    _generate(tts, _requests(n, tokens), True)
    return _peak_rss_mb()


def _child(conn, name: str, args: tuple) -> None:
    conn.send(globals()[name](*args))


def in_fresh_process(name: str, *args):
    """This module's function `name` run in a spawned process: its memory figures are its own."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child, name, args))
    proc.start()
    value = parent.recv()
    proc.join()
    return value


def table(results: dict) -> str:
    lines = []
    for backend, r in results.items():
        lines.append(f"### {backend}: semantic, {r['semantic_tokens']} tokens per request (text_to_semantic)\n")
        lines.append("| concurrent | tokens/s | one after another | speedup | equal to sequential |")
        lines.append("|---|---|---|---|---|")
        for n, s in r["semantic"].items():
            lines.append(f"| {n} | {s['tokens_per_s']:.1f} | {s['sequential_tokens_per_s']:.1f} | "
                         f"{s['speedup']:.2f}x | {s['equal']} |")
        lines.append(f"\n### {backend}: whole streamed generations, {r['tokens']} semantic tokens each "
                     f"(fine windows {r.get('fine_batch', 1)}, codec chunks {r.get('codec_batch', 1)} a call)\n")
        lines.append("| concurrent | audio s / s | one after another | speedup | first audio p50 / p95 s | "
                     "equal to sequential |")
        lines.append("|---|---|---|---|---|---|")
        for n, g in r["generation"].items():
            lines.append(f"| {n} | {g['audio_s_per_s']:.3f} | {g['sequential_audio_s_per_s']:.3f} | "
                         f"{g['speedup']:.2f}x | {g['first_audio_p50_s']:.2f} / {g['first_audio_p95_s']:.2f} | "
                         f"{g['equal']} |")
        m = r["memory"]
        lines.append(f"\npeak RSS: one request {m['one']:.0f} MB, {m['n']} at once {m['many']:.0f} MB "
                     f"({m['many'] / m['one']:.2f}x)\n")
    return "\n".join(lines)


def run(size: str, precisions: list[str], levels=LEVELS, tokens: int = 200, semantic_tokens: int = 650,
        threads: int | None = None, out: Path | None = None, cache: Path | None = None, providers=None,
        batches: dict | None = None) -> dict:
    """batches: Bark.load's fine_batch / codec_batch (default: the model's own defaults)."""
    from .prepare import prepare

    paths = prepare(size, precisions, cache, progress=True)
    results = {}
    for precision in precisions:
        model_dir = paths[f"onnx-{precision}"]
        print(f"onnx-{precision}: concurrency levels {list(levels)}", file=sys.stderr, flush=True)
        r = in_fresh_process("measure", model_dir, tuple(levels), tokens, semantic_tokens, threads, providers,
                             batches)
        r["semantic_tokens"] = semantic_tokens
        r["memory"] = {"one": in_fresh_process("_peak", model_dir, 1, tokens, threads, providers, batches),
                       "n": max(levels),
                       "many": in_fresh_process("_peak", model_dir, max(levels), tokens, threads, providers,
                                                batches)}
        results[f"onnx-{precision}"] = r
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "concurrency.json", results)
        write_atomic(out / "concurrency.md", table(results))
    print(table(results))
    return results
