"""Whole requests as pipelines of the stage loops: text in, a `Generation` out.

Each is a generator of work items (see work.py) that the engine drives; a
streaming pipeline also yields Emit(chunk) items as audio becomes final.
"""

from __future__ import annotations

import time

import numpy as np

from ..constants import SAMPLE_RATE
from ..model.voices import validate_voice
from ..options import GenerationOptions
from ..result import Generation, join
from .coarse import SemanticSource, coarse_loop
from .codec import decode
from .fine import fine_loop
from .progress import Progress
from .semantic import semantic_history, semantic_loop, semantic_run
from .stream import streamed_audio
from .work import Emit, Release, Spawn


def stage_rngs(seed, n: int = 3) -> list[np.random.Generator]:
    """Independent random streams (one per stage, or per segment) from one seed, so that a stage's
    draws do not depend on how many the stages before it made (streaming and one-shot agree)."""
    if isinstance(seed, np.random.Generator):
        return list(seed.spawn(n))
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def _empty(semantic: np.ndarray, timings: dict) -> Generation:
    """Bark's semantic stage may end at once: no frames, no audio."""
    return Generation(np.zeros(0, np.float32), semantic, np.zeros((2, 0), np.int64), np.zeros((8, 0), np.int64),
                      timings)


def generation(text_tokens: np.ndarray, voice: dict | None, options: GenerationOptions, seed,
               stream: bool = False, progress: Progress | None = None):
    """One segment: semantic, coarse, fine, codec; with `stream`, chunks go out as they are ready and
    the coarse stage starts while the semantic stage runs (see stream.py)."""
    rngs = stage_rngs(seed)
    if stream:
        yield Spawn(semantic_run(text_tokens, semantic_history(voice), options.semantic, rngs[0]))
        source = SemanticSource(at_end=[Release("semantic")])  # the run's row is free once its end is read
        return (yield from streamed_generation(source, voice, options, rngs, progress))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    semantic = yield from semantic_loop(text_tokens, semantic_history(voice), options.semantic, rngs[0], progress)
    t1 = time.perf_counter()
    timings["semantic"] = t1 - t0
    if semantic.size == 0:
        return _empty(semantic, timings)
    coarse = yield from coarse_loop(semantic, voice, options.coarse, rngs[1], progress)
    t2 = time.perf_counter()
    fine = yield from fine_loop(coarse, voice, options.fine.temperature, rngs[2], progress)
    t3 = time.perf_counter()
    audio = yield from decode(fine)
    timings.update(coarse=t2 - t1, fine=t3 - t2, codec=time.perf_counter() - t3)
    return Generation(audio, semantic, coarse, fine, timings)


def streamed_generation(source: SemanticSource, voice: dict | None, options: GenerationOptions, rngs: list,
                        progress: Progress | None = None):
    """A stream whose semantic run is under way in the background (`source` reads it). Timings: from
    the start to the semantic stage's end, and to the stream's end."""
    t0 = time.perf_counter()
    coarse, fine, audio = yield from streamed_audio(source, voice, options, rngs, progress)
    timings = {"semantic": 0.0 if source.ended_at is None else source.ended_at - t0,
               "stream": time.perf_counter() - t0}
    if source.tokens.size == 0:
        return _empty(source.tokens, timings)
    return Generation(audio, source.tokens, coarse, fine, timings)


def long_generation(segments: list[np.ndarray], voice: dict | None, history: str, pause_s: float,
                    options: GenerationOptions, seed, stream: bool = False, progress: Progress | None = None):
    """Segments one after another, joined by `pause_s` of silence.

    history="voice": every segment uses `voice` as its history (steady timbre); streamed, the next
    segment's semantic run starts as soon as the current one's ends, so the pause between segments
    does not wait for a whole semantic stage. history="previous": each segment continues from the
    previous one's generation, so its semantic stage starts only once that generation is complete.
    """
    pause = np.zeros(int(round(pause_s * SAMPLE_RATE)), np.float32)
    seeds = stage_rngs(seed, len(segments))
    if stream and history == "voice":
        return (yield from _prefetched_segments(segments, voice, pause, options, seeds, progress))
    current, parts = voice, []
    for i, tokens in enumerate(segments):
        if i and stream and pause.size:
            yield Emit(pause)
        part = yield from generation(tokens, current, options, seeds[i], stream, progress)
        parts.append(part)
        if history == "previous" and part.fine.shape[1]:
            current = validate_voice(part.prompt, "the previous segment")
    return join(parts, pause)


def _prefetched_segments(segments: list[np.ndarray], voice: dict | None, pause: np.ndarray,
                         options: GenerationOptions, seeds: list, progress: Progress | None):
    """history="voice", streamed: segment i + 1's semantic run is spawned when segment i's ends."""
    rngs = [stage_rngs(s) for s in seeds]
    runs = [semantic_run(tokens, semantic_history(voice), options.semantic, r[0]) for tokens, r in zip(segments, rngs)]
    parts = []
    yield Spawn(runs[0])
    for i in range(len(segments)):
        if i and pause.size:
            yield Emit(pause)
        # once segment i's run is seen to end: its row is free, and segment i + 1's run starts
        at_end = [Release("semantic"), *([Spawn(runs[i + 1])] if i + 1 < len(runs) else [])]
        parts.append((yield from streamed_generation(SemanticSource(at_end=at_end), voice, options, rngs[i],
                                                     progress)))
    return join(parts, pause)
