"""`Bark`: load a model directory, then text -> semantic -> coarse -> fine -> 24 kHz audio.

One primitive, `submit(Request) -> Job`, and shorthands over it:

    tts.submit(request)      a Job: iterate it for chunks, .result() for the Generation, .cancel()
    tts.generate(text, ...)  float32 audio (or Bark's (prompt, audio) with output_full=True)
    tts.stream(text, ...)    a streaming Job
    tts.synthesize(text,...) the whole Generation: audio, every stage's tokens, timings
    tts.step()               one round of every request in flight, for a model loaded with
                             background=False (nothing runs until it is called)

The shorthands take `Request.make`'s keywords. A request is built and checked in
the caller's thread (so bad input fails at once); the model loads its voice and
tokenizes its text there too, then hands it to the engine, which runs the requests
of all threads together, batched step by step. So one `Bark` serves many threads;
a list of texts is several requests. The stage methods (`text_to_semantic`,
`semantic_to_coarse`, `coarse_to_fine`, `decode`) run one stage each on the same
engine: Bark's own functions (bark_onnx/compat.py) are built from them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .constants import SAMPLE_RATE
from .engine.core import Engine
from .engine.decoder import CausalDecoder
from .engine.executor import WINDOW_BATCH, Executor
from .engine.job import Job
from .engine.scheduler import DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE, Scheduler
from .errors import BarkOnnxError, InputError, ModelDirError
from .model.config import STAGES, VOICES_DIR, ModelConfig
from .model.hub import is_offline, resolve_model_dir
from .model.voices import Voice, VoiceLibrary, VoiceLike
from .options import check_seed, resolve, stage_keywords
from .request import Request
from .result import Generation
from .sessions.graph_check import check_graphs
from .sessions.providers import Placement, settle_placement
from .sessions.session import create_session, make_placement
from .stages.coarse import check_semantic, coarse_loop
from .stages.codec import check_fine, decode
from .stages.fine import check_coarse, fine_loop
from .stages.pipeline import generation, long_generation, stage_rngs
from .stages.progress import Progress
from .stages.semantic import semantic_history, semantic_loop
from .stages.text import TextEncoder, check_text

logger = logging.getLogger(__name__)


def _as_list(value, what: str) -> tuple[list, bool]:
    """(items, was_a_list); refuses an empty list."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise InputError(f"the list of {what} is empty")
        return list(value), True
    return [value], False


def _item_seeds(seed, n: int, many: bool) -> list:
    """One seed per request: the seed itself for one item, independent children for a list."""
    seed = check_seed(seed)
    return stage_rngs(seed, n) if many else [seed]


class Bark:
    """Bark text-to-audio on ONNX Runtime. Make one with `Bark.load(model_dir)`."""

    sample_rate = SAMPLE_RATE

    def __init__(self, model_dir: Path, config: ModelConfig, placement: Placement, max_batch: int = DEFAULT_MAX_BATCH,
                 max_queue: int = DEFAULT_MAX_QUEUE, offline: bool = False, cuda_graph: bool | None = None,
                 fine_batch: int | None = None, codec_batch: int | None = None, background: bool = True):
        if not isinstance(background, bool):
            raise InputError(f"background must be True or False, got {background!r}", param="background")
        scheduler = Scheduler(max_batch, max_queue)  # checks both limits
        self.model_dir = model_dir
        self.config = config
        self.placement = placement
        fp16 = config.precision == "fp16"
        self.sessions = {s: create_session(model_dir / config.graphs[s].file, placement, fp16) for s in STAGES}
        # what the sessions got, not what was asked for: bound buffers must live where the sessions run
        placement = self.placement = settle_placement(placement, self.sessions, config.precision, config.kv_cache)
        self._check_graphs()
        steps = self._step_sessions(cuda_graph, fp16)
        self.decoders = {s: CausalDecoder(self.sessions[s], config.graphs[s], getattr(config, s), config.kv_cache,
                                          placement, max_rows=scheduler.max_batch, step_session=steps.get(s))
                         for s in ("semantic", "coarse")}
        batch = min(WINDOW_BATCH, scheduler.max_batch) if placement.on_gpu else 1  # see engine/executor.py
        fine_batch = batch if fine_batch is None else fine_batch
        codec_batch = batch if codec_batch is None else codec_batch
        self.engine = Engine(Executor(self.decoders, self.sessions["fine"], self.sessions["codec"], fine_batch,
                                      codec_batch), scheduler, background)
        self.text = TextEncoder(model_dir / config.tokenizer)
        self.voices = VoiceLibrary(model_dir / VOICES_DIR, use_hub=not is_offline(offline))

    def _step_sessions(self, cuda_graph: bool | None, fp16: bool) -> dict:
        """The step-only graphs, where steps run through them: on a GPU by default (captured as CUDA
        graphs), elsewhere only when asked for (the same arithmetic, for checks)."""
        have = set(self.config.step_graphs) == {"semantic", "coarse"}
        if cuda_graph and not have:
            raise ModelDirError(f"{self.model_dir} has no step graphs for CUDA graphs; export it again "
                                "(fp16 or fp32, --kv-cache inplace)")
        if not (cuda_graph if cuda_graph is not None else self.placement.on_gpu and have):
            return {}
        try:
            return {s: create_session(self.model_dir / self.config.step_graphs[s].file, self.placement, fp16,
                                      cuda_graph=self.placement.on_gpu) for s in ("semantic", "coarse")}
        except BarkOnnxError as err:
            if cuda_graph:
                raise
            logger.warning("decoding steps run without CUDA graphs: the step graphs did not load (%s)", err)
            return {}

    @classmethod
    def load(cls, model: str | Path, providers=None, threads: int | None = None, *, max_batch: int = DEFAULT_MAX_BATCH,
             max_queue: int = DEFAULT_MAX_QUEUE, offline: bool = False, cuda_graph: bool | None = None,
             fine_batch: int | None = None, codec_batch: int | None = None, background: bool = True) -> Bark:
        """Load a model directory made by `bark-onnx export`, or one from the Hugging Face hub ("org/name").

        providers: None (CUDA where it starts, then the CPU), or names such as ["cuda", "cpu"]
        (TensorRT only when named). threads: CPU threads per session (default: the cores this
        process may use). max_batch: requests generated together; max_queue: requests waiting
        beyond those (more raise QueueFullError). offline: never look anything up on the network.
        cuda_graph: run the decoding steps through the step-only graphs, captured once as CUDA
        graphs (default: on a GPU, when the model has them). fine_batch, codec_batch: fine windows
        and stream codec chunks of concurrent requests that run as one call, always padded to this
        many rows, so a request's audio does not depend on its neighbours (default: 4, at most
        max_batch, on a GPU; 1 on the CPU, where a lone request would pay for the padding).
        background: False runs nothing until the caller calls `step()` (one round of every request in
        flight), in the caller's thread: for tests and for callers that drive the engine themselves.
        `generate`, `synthesize` and the stage methods then step it until their own requests end;
        a job from `submit` or `stream` advances only as `step()` is called.
        """
        model_dir = resolve_model_dir(model, offline)
        config = ModelConfig.load(model_dir)
        placement = make_placement(providers, threads)
        tts = cls(model_dir, config, placement, max_batch, max_queue, offline, cuda_graph, fine_batch, codec_batch,
                  background)
        logger.info("bark-onnx: %s graphs on %s (%d threads)", config.precision,
                    ", ".join(p.replace("ExecutionProvider", "") for p in tts.active_providers()), placement.threads)
        return tts

    def active_providers(self) -> list[str]:
        return self.sessions["semantic"].get_providers()

    def _check_graphs(self) -> None:
        check_graphs(self.config, self.sessions)

    def stats(self) -> dict[str, int]:
        """Requests waiting and in flight, cache rows in use, and how many completed, failed or were cancelled."""
        return self.engine.stats()

    def step(self) -> bool:
        """One round of the engine: admit waiting requests, advance every running one by one piece of
        graph work (a decoding step, a window, a chunk). Returns False when no request was waiting or
        running. For a model loaded with background=False; with the engine's own thread running,
        refused (two threads must not step one engine)."""
        if self.engine.background:
            raise InputError("step() drives a model loaded with background=False; this one steps itself")
        return self.engine.step()

    def close(self, timeout: float | None = None) -> None:
        """Finish the requests in flight (up to `timeout` s, then cancel them) and stop the engine
        (with background=False, cancel them at once)."""
        self.engine.close(timeout)

    def __enter__(self) -> Bark:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def load_voice(self, voice: VoiceLike) -> Voice | None:
        """A preset name, an .npz path, a dict of three arrays, or None."""
        return self.voices.resolve(voice)

    # ------------------------------------------------------------ requests

    def submit(self, request: Request) -> Job:
        """Queue one request and return at once: iterate the job for the chunks of a streaming
        request (`async for` in an event loop), `job.result()` for the `Generation`, `job.cancel()`
        to stop it. Its voice is loaded and its
        text tokenized here, in the caller's thread. Raises QueueFullError when the queue is full."""
        if not isinstance(request, Request):
            raise InputError(f"submit takes a Request (Request.make(text, ...)), got {type(request).__name__}; "
                             "generate() and stream() take a text")
        return self.engine.submit(self._pipeline(request))

    def _pipeline(self, request: Request):
        voice = self.load_voice(request.voice)
        progress = Progress(not request.silent)
        if request.long is None:
            return generation(self.text.encode(request.text), voice, request.options, request.seed, request.stream,
                              progress)
        segments = [self.text.encode(s) for s in request.segments]
        return long_generation(segments, voice, request.long.history, request.long.pause_s, request.options,
                               request.seed, request.stream, progress)

    def _requests(self, text, voice, keywords: dict, silent: bool, stream: bool = False) -> tuple[list[Request], bool]:
        """One request per text (a list gets independent child seeds of `seed`); keywords as Request.make."""
        texts, many = _as_list(text, "texts")
        seed = keywords.pop("seed", None)
        seeds = _item_seeds(seed, len(texts), many)
        keywords.setdefault("silent", silent)
        return [Request.make(t, voice, seed=s, stream=stream, **keywords) for t, s in zip(texts, seeds)], many

    def synthesize(self, text, voice: VoiceLike = None, **keywords) -> Generation | list[Generation]:
        """Text (or a list) -> a `Generation` (or a list): audio, every stage's tokens, timings.

        Keywords: as `Request.make` (seed, options, long, history, pause_s, max_words, silent) and
        Bark's options by name: text_temperature, waveform_temperature, fine_temperature, top_k and
        top_p (semantic and coarse), min_eos_p, max_gen_duration_s, allow_early_stop,
        max_coarse_history, sliding_window_len. Progress bars show unless silent=True.
        """
        requests, many = self._requests(text, voice, keywords, silent=False)
        results = self._run_each([self._pipeline(r) for r in requests])
        return results if many else results[0]

    def generate(self, text, voice: VoiceLike = None, *, output_full: bool = False, **keywords):
        """Text (or a list) -> float32 audio at 24 kHz (or a list); keywords as `synthesize`.

        With output_full=True returns Bark's (full_generation, audio), where full_generation is the
        dict {semantic_prompt, coarse_prompt, fine_prompt} that `save_as_prompt` stores as a voice
        (for a list: the list of prompts and the list of audio arrays).
        """
        result = self.synthesize(text, voice, **keywords)
        results = result if isinstance(result, list) else [result]
        audio = [r.audio for r in results]
        if not output_full:
            return audio if isinstance(result, list) else audio[0]
        prompts = [r.prompt for r in results]
        return (prompts, audio) if isinstance(result, list) else (prompts[0], audio[0])

    def stream(self, text: str, voice: VoiceLike = None, **keywords) -> Job:
        """A streaming request: iterate the job for float32 chunks of 24 kHz audio as soon as each
        can be decoded (`for chunk in tts.stream(...)`); `job.result()` is then the `Generation`.
        Keywords as `synthesize`; long=True streams a long text segment by segment."""
        if not isinstance(text, str):
            raise InputError("stream takes one text; for a list, stream each or use generate([...])", param="text")
        keywords.setdefault("silent", True)
        return self.submit(Request.make(text, voice, stream=True, **keywords))

    # ------------------------------------------------------------ stages, one at a time

    def _run_each(self, pipelines: list) -> list:
        jobs = []
        try:
            for pipeline in pipelines:
                jobs.append(self.engine.submit(pipeline))
            if not self.engine.background:  # nothing else steps this engine: the caller's thread does
                while not all(job.done for job in jobs) and self.engine.step():
                    pass
            return [job.result() for job in jobs]
        finally:
            for job in jobs:
                job.cancel()  # a no-op for finished ones; frees the rest when one failed or we were interrupted

    def _stage(self, pipelines: list, many: bool):
        out = self._run_each(pipelines)
        return out if many else out[0]

    def text_to_semantic(self, text, voice: VoiceLike = None, *, seed=None, silent: bool = False,
                         options: Any = None, **keywords):
        """Text (or a list) -> semantic tokens (n,) int64 (or a list). Keywords: SemanticOptions' fields."""
        texts, many = _as_list(text, "texts")
        opts = resolve(options, keywords, stage_keywords("semantic")).semantic
        for t in texts:
            check_text(t)
        tokens = [self.text.encode(t) for t in texts]
        history = semantic_history(self.load_voice(voice))
        seeds = _item_seeds(seed, len(texts), many)
        return self._stage([semantic_loop(t, history, opts, np.random.default_rng(s), Progress(not silent))
                            for t, s in zip(tokens, seeds)], many)

    def semantic_to_coarse(self, semantic, voice: VoiceLike = None, *, seed=None, silent: bool = False,
                           options: Any = None, **keywords):
        """Semantic tokens (or a list) -> coarse codes (2, n) (or a list). Keywords: CoarseOptions' fields."""
        rows, many = _as_list(semantic, "semantic arrays")
        rows = [check_semantic(r) for r in rows]
        opts = resolve(options, keywords, stage_keywords("coarse")).coarse
        v = self.load_voice(voice)
        seeds = _item_seeds(seed, len(rows), many)
        return self._stage([coarse_loop(r, v, opts, np.random.default_rng(s), Progress(not silent))
                            for r, s in zip(rows, seeds)], many)

    def coarse_to_fine(self, coarse, voice: VoiceLike = None, *, seed=None, silent: bool = True,
                       options: Any = None, **keywords):
        """Coarse codes (2, n) (or a list) -> fine codes (8, n) (or a list). Keyword: temperature (0.5)."""
        rows, many = _as_list(coarse, "coarse arrays")
        rows = [check_coarse(r) for r in rows]
        opts = resolve(options, keywords, stage_keywords("fine")).fine
        v = self.load_voice(voice)
        seeds = _item_seeds(seed, len(rows), many)
        return self._stage([fine_loop(r, v, opts.temperature, np.random.default_rng(s), Progress(not silent))
                            for r, s in zip(rows, seeds)], many)

    def decode(self, fine):
        """Fine codes (8, n) (or a list) -> float32 audio (n * 320,) at 24 kHz (or a list)."""
        rows, many = _as_list(fine, "fine arrays")
        return self._stage([decode(check_fine(r)) for r in rows], many)
