"""Time to first audio of a stream against the whole one-shot request: `bark-onnx bench first-audio`.

One 13 s segment (650 semantic tokens: EOS off, `max_gen_duration_s=13`, sampled), with a voice
preset and without, each timed in alternating rounds after a warm-up: the one-shot request
(`synthesize`), and the same request streamed (`stream`), whose first chunk and end are timed. The
figures: first audio, the streamed request's whole time, the one-shot time, first audio / one-shot,
and whether the stream's semantic and coarse tokens equal the one-shot ones. `--pacing both` also
runs the streams without the first-audio pacing (see engine/scheduler.py, FifoPolicy).

    bark-onnx bench first-audio [--size small] [--precision int8] [--rounds 3] [--voices v2/en_speaker_6,none]
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from .report import cpu_flags
from .workload import SEED, SEGMENT, TEXT

PACINGS = {"first-audio": True, "free": False}


def _stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": values}


def measure(model_dir: Path, voices=("v2/en_speaker_6", None), rounds: int = 3, pacings=("first-audio",),
            threads: int | None = None, providers=None) -> dict:
    from bark_onnx import Bark, Request
    from bark_onnx.runtime.engine.scheduler import FifoPolicy

    tts = Bark.load(model_dir, providers=providers, threads=threads)
    try:
        options = dict(allow_early_stop=False, max_gen_duration_s=SEGMENT.max_gen_duration_s, seed=SEED)
        tts.synthesize("warm up", silent=True, max_gen_duration_s=0.5)
        list(tts.stream("warm up", max_gen_duration_s=0.5))
        results = []
        for voice in voices:
            one_shot, streams = [], {p: {"first": [], "whole": []} for p in pacings}
            same = True
            for _ in range(rounds):
                t0 = time.perf_counter()
                reference = tts.synthesize(TEXT, voice, silent=True, **options)
                one_shot.append(time.perf_counter() - t0)
                for pacing in pacings:
                    tts.engine.scheduler.policy = FifoPolicy(first_audio_first=PACINGS[pacing])
                    job = tts.submit(Request.make(TEXT, voice, stream=True, **options))
                    t0 = time.perf_counter()
                    for _chunk in job:
                        pass
                    streams[pacing]["whole"].append(time.perf_counter() - t0)
                    streams[pacing]["first"].append(job.first_chunk_s)
                    got = job.result()
                    same = same and all(np.array_equal(getattr(got, f), getattr(reference, f))
                                        for f in ("semantic", "coarse"))
            tts.engine.scheduler.policy = FifoPolicy()
            base = statistics.median(one_shot)
            row = {"voice": voice or "none", "semantic_tokens": int(len(reference.semantic)),
                   "one_shot_s": _stats(one_shot), "tokens_equal": same, "stream": {}}
            for pacing, times in streams.items():
                first, whole = statistics.median(times["first"]), statistics.median(times["whole"])
                row["stream"][pacing] = {"first_audio_s": _stats(times["first"]), "whole_s": _stats(times["whole"]),
                                         "first_over_one_shot": first / base, "whole_over_one_shot": whole / base}
            results.append(row)
        return {"model": str(model_dir), "cpu_flags": cpu_flags(), "threads": threads,
                "providers": tts.active_providers(), "rows": results}
    finally:
        tts.close()


def table(result: dict) -> str:
    lines = ["voice | pacing | first audio s | stream s | one-shot s | first / one-shot | stream / one-shot | "
             "tokens equal", "---|---|---|---|---|---|---|---"]
    for row in result["rows"]:
        for pacing, s in row["stream"].items():
            f, w, o = s["first_audio_s"], s["whole_s"], row["one_shot_s"]
            lines.append(f"{row['voice']} | {pacing} | {f['median']:.2f} ({f['min']:.2f}-{f['max']:.2f}) | "
                         f"{w['median']:.2f} ({w['min']:.2f}-{w['max']:.2f}) | {o['median']:.2f} "
                         f"({o['min']:.2f}-{o['max']:.2f}) | {s['first_over_one_shot']:.3f} | "
                         f"{s['whole_over_one_shot']:.3f} | {row['tokens_equal']}")
    return "\n".join(lines)
