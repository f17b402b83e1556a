"""`Bark`: load a model directory, then text -> semantic -> coarse -> fine -> 24 kHz audio.

Every call builds its request in the caller's thread (text, voice and options
are checked there, so bad input fails at once) and hands it to the engine,
which runs the requests of all threads together, batched step by step. So one
`Bark` serves many threads; a list input is several requests. Temperature 0 or
None means greedy decoding; `seed` makes sampling reproducible, alone or among
other requests.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .coarse import check_semantic, coarse_loop
from .codec import check_fine, decode
from .config import STAGES, VOICES_DIR, ModelConfig
from .constants import SAMPLE_RATE
from .decoder import CausalDecoder
from .engine import Engine, Job
from .errors import BarkOnnxError, InputError, ModelDirError
from .executor import Executor
from .fine import check_coarse, fine_loop
from .graph_check import check_graphs
from .hub import resolve_model_dir
from .longform import MAX_WORDS, split_text
from .offline import is_offline
from .options import PIPELINE_KEYWORDS, check_seed, resolve, stage_keywords
from .pipeline import generation, long_generation, stage_rngs
from .progress import Progress
from .result import Generation
from .semantic import semantic_history, semantic_loop
from .sessions import Placement, create_session, make_placement, settle_placement
from .text import TextEncoder
from .voices import Voice, VoiceLibrary, VoiceLike

logger = logging.getLogger(__name__)

LONG_HISTORIES = ("voice", "previous")


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

    def __init__(self, model_dir: Path, config: ModelConfig, placement: Placement, max_batch: int = 8,
                 max_queue: int = 64, offline: bool = False, cuda_graph: bool | None = None):
        if not isinstance(max_batch, int) or max_batch < 1:
            raise InputError(f"max_batch must be a positive integer, got {max_batch!r}")
        if not isinstance(max_queue, int) or max_queue < 0:
            raise InputError(f"max_queue must be a non-negative integer, got {max_queue!r}")
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
                                          placement, max_rows=max_batch, step_session=steps.get(s))
                         for s in ("semantic", "coarse")}
        self.engine = Engine(Executor(self.decoders, self.sessions["fine"], self.sessions["codec"]), max_batch,
                             max_queue)
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
    def load(cls, model: str | Path, providers=None, threads: int | None = None, *, max_batch: int = 8,
             max_queue: int = 64, offline: bool = False, cuda_graph: bool | None = None) -> Bark:
        """Load a model directory made by `bark-onnx export`, or one from the Hugging Face hub ("org/name").

        providers: None (CUDA where it starts, then the CPU), or names such as ["cuda", "cpu"]
        (TensorRT only when named). threads: CPU threads per session (default: the cores this
        process may use). max_batch: requests generated together; max_queue: requests waiting
        beyond those (more raise QueueFullError). offline: never look anything up on the network.
        cuda_graph: run the decoding steps through the step-only graphs, captured once as CUDA
        graphs (default: on a GPU, when the model has them).
        """
        model_dir = resolve_model_dir(model, offline)
        config = ModelConfig.load(model_dir)
        placement = make_placement(providers, threads)
        tts = cls(model_dir, config, placement, max_batch, max_queue, offline, cuda_graph)
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

    def close(self, timeout: float | None = None) -> None:
        """Finish the requests in flight (up to `timeout` s, then cancel them) and stop the engine."""
        self.engine.close(timeout)

    def __enter__(self) -> Bark:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def load_voice(self, voice: VoiceLike) -> Voice | None:
        """A preset name, an .npz path, a dict of three arrays, or None."""
        return self.voices.resolve(voice)

    # ------------------------------------------------------------ stages

    def _run_each(self, pipelines: list, many: bool):
        jobs = [self.engine.submit(p) for p in pipelines]
        try:
            out = [job.result() for job in jobs]
        finally:
            for job in jobs:
                job.cancel()  # a no-op for finished ones; frees the rest when one failed or we were interrupted
        return out if many else out[0]

    def text_to_semantic(self, text, voice: VoiceLike = None, *, seed=None, silent: bool = False,
                         options: Any = None, **keywords):
        """Text (or a list) -> semantic tokens (n,) int64 (or a list). Keywords: SemanticOptions' fields."""
        texts, many = _as_list(text, "texts")
        opts = resolve(options, keywords, stage_keywords("semantic")).semantic
        tokens = [self.text.encode(t) for t in texts]
        history = semantic_history(self.load_voice(voice))
        seeds = _item_seeds(seed, len(texts), many)
        return self._run_each([semantic_loop(t, history, opts, np.random.default_rng(s), Progress(not silent))
                               for t, s in zip(tokens, seeds)], many)

    def semantic_to_coarse(self, semantic, voice: VoiceLike = None, *, seed=None, silent: bool = False,
                           options: Any = None, **keywords):
        """Semantic tokens (or a list) -> coarse codes (2, n) (or a list). Keywords: CoarseOptions' fields."""
        rows, many = _as_list(semantic, "semantic arrays")
        rows = [check_semantic(r) for r in rows]
        opts = resolve(options, keywords, stage_keywords("coarse")).coarse
        v = self.load_voice(voice)
        seeds = _item_seeds(seed, len(rows), many)
        return self._run_each([coarse_loop(r, v, opts, np.random.default_rng(s), Progress(not silent))
                               for r, s in zip(rows, seeds)], many)

    def coarse_to_fine(self, coarse, voice: VoiceLike = None, *, seed=None, silent: bool = True,
                       options: Any = None, **keywords):
        """Coarse codes (2, n) (or a list) -> fine codes (8, n) (or a list). Keyword: temperature (0.5)."""
        rows, many = _as_list(coarse, "coarse arrays")
        rows = [check_coarse(r) for r in rows]
        opts = resolve(options, keywords, stage_keywords("fine")).fine
        v = self.load_voice(voice)
        seeds = _item_seeds(seed, len(rows), many)
        return self._run_each([fine_loop(r, v, opts.temperature, np.random.default_rng(s), Progress(not silent))
                               for r, s in zip(rows, seeds)], many)

    def decode(self, fine):
        """Fine codes (8, n) (or a list) -> float32 audio (n * 320,) at 24 kHz (or a list)."""
        rows, many = _as_list(fine, "fine arrays")
        return self._run_each([decode(check_fine(r)) for r in rows], many)

    # ------------------------------------------------------------ whole pipeline

    def _requests(self, text, voice, seed, options, keywords, stream: bool, silent: bool):
        texts, many = _as_list(text, "texts")
        opts = resolve(options, keywords, PIPELINE_KEYWORDS)
        tokens = [self.text.encode(t) for t in texts]
        v = self.load_voice(voice)
        seeds = _item_seeds(seed, len(texts), many)
        return [generation(t, v, opts, s, stream, Progress(not silent)) for t, s in zip(tokens, seeds)], many

    def synthesize(self, text, voice: VoiceLike = None, *, seed=None, silent: bool = False, options: Any = None,
                   **keywords) -> Generation | list[Generation]:
        """Text (or a list) -> a `Generation` (or a list): audio, every stage's tokens, timings.

        Keywords (shorthand for `options`): text_temperature, waveform_temperature,
        fine_temperature, top_k and top_p (semantic and coarse), min_eos_p,
        max_gen_duration_s, allow_early_stop, max_coarse_history, sliding_window_len.
        """
        pipelines, many = self._requests(text, voice, seed, options, keywords, False, silent)
        return self._run_each(pipelines, many)

    def generate(self, text, voice: VoiceLike = None, *, seed=None, silent: bool = False, output_full: bool = False,
                 options: Any = None, **keywords):
        """Text (or a list) -> float32 audio at 24 kHz (or a list); keywords as `synthesize`.

        With output_full=True returns (audio, prompt), where prompt is the dict
        {semantic_prompt, coarse_prompt, fine_prompt} that `np.savez` stores as a voice.
        """
        result = self.synthesize(text, voice, seed=seed, silent=silent, options=options, **keywords)
        results = result if isinstance(result, list) else [result]
        if not output_full:
            audio = [r.audio for r in results]
            return audio if isinstance(result, list) else audio[0]
        pairs = [(r.audio, r.prompt) for r in results]
        if isinstance(result, list):
            return [p[0] for p in pairs], [p[1] for p in pairs]
        return pairs[0]

    def stream(self, text: str, voice: VoiceLike = None, *, seed=None, silent: bool = True, options: Any = None,
               **keywords) -> Job:
        """Float32 chunks of 24 kHz audio as soon as each can be decoded: iterate the returned job
        (`for chunk in tts.stream(...)`); `job.result()` is then the whole `Generation`."""
        if not isinstance(text, str):
            raise InputError("stream takes one text; for a list, stream each or use generate([...])")
        pipelines, _ = self._requests(text, voice, seed, options, keywords, True, silent)
        return self.engine.submit(pipelines[0])

    # ------------------------------------------------------------ long text

    def _long_request(self, text, voice, history, pause_s, max_words, seed, options, keywords, stream, silent):
        if history not in LONG_HISTORIES:
            raise InputError(f"history must be 'voice' or 'previous', got {history!r}")
        if isinstance(pause_s, bool) or not isinstance(pause_s, (int, float, np.number)) \
                or not 0 <= float(pause_s) <= 10:
            raise InputError(f"pause_s must be a number of seconds in [0, 10], got {pause_s!r}")
        opts = resolve(options, keywords, PIPELINE_KEYWORDS)
        segments = [self.text.encode(s) for s in split_text(text, max_words)]
        v = self.load_voice(voice)
        return long_generation(segments, v, history, float(pause_s), opts, check_seed(seed), stream,
                               Progress(not silent))

    def stream_long(self, text: str, voice: VoiceLike = None, *, history: str = "voice", pause_s: float = 0.25,
                    max_words: int = MAX_WORDS, seed=None, silent: bool = True, options: Any = None,
                    **keywords) -> Job:
        """Long text, streamed: segments cut at sentences and clauses, joined by `pause_s` of silence.

        history="voice": every segment uses `voice` as its history (steady timbre);
        history="previous": each segment continues from the previous one's generation.
        """
        return self.engine.submit(self._long_request(text, voice, history, pause_s, max_words, seed, options,
                                                     keywords, True, silent))

    def generate_long(self, text: str, voice: VoiceLike = None, *, history: str = "voice", pause_s: float = 0.25,
                      max_words: int = MAX_WORDS, seed=None, silent: bool = False, options: Any = None,
                      **keywords) -> np.ndarray:
        """Long text in one call: float32 audio of every segment, joined by `pause_s` of silence."""
        return self.synthesize_long(text, voice, history=history, pause_s=pause_s, max_words=max_words, seed=seed,
                                    silent=silent, options=options, **keywords).audio

    def synthesize_long(self, text: str, voice: VoiceLike = None, *, history: str = "voice", pause_s: float = 0.25,
                        max_words: int = MAX_WORDS, seed=None, silent: bool = False, options: Any = None,
                        **keywords) -> Generation:
        """`generate_long` returning the `Generation` (tokens of all segments end to end)."""
        return self._run_each([self._long_request(text, voice, history, pause_s, max_words, seed, options, keywords,
                                                  False, silent)], False)

    def submit(self, text: str, voice: VoiceLike = None, *, seed=None, options: Any = None, long: bool = False,
               history: str = "voice", pause_s: float = 0.25, max_words: int = MAX_WORDS, **keywords) -> Job:
        """Queue one streamed request and return at once (for services): iterate the job for chunks
        (`async for` in an event loop), `job.result()` for the `Generation`, `job.cancel()` to stop it.
        Raises QueueFullError when the queue is full."""
        if not isinstance(text, str):
            raise InputError(f"text must be a string, got {type(text).__name__}")
        if long:
            pipeline = self._long_request(text, voice, history, pause_s, max_words, seed, options, keywords, True,
                                          True)
        else:
            pipeline = self._requests(text, voice, seed, options, keywords, True, True)[0][0]
        return self.engine.submit(pipeline)

