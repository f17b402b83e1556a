"""`Bark`: load a model directory, then text -> semantic -> coarse -> fine -> 24 kHz audio.

Every stage method takes one input or a list of them (run together through
batched graph calls) and returns one result or a list. Temperature 0 or None
means greedy decoding. `seed` makes sampling reproducible.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from .coarse import CoarseOptions, check_semantic, coarse_windows, generate_coarse
from .config import STAGES, VOICES_DIR, ModelConfig
from .constants import CODEBOOK_SIZE, N_FINE_CODEBOOKS, SAMPLE_RATE
from .decoder import CausalDecoder
from .errors import InputError, ModelDirError
from .fine import check_coarse, generate_fine
from .longform import MAX_WORDS, split_text
from .semantic import SemanticOptions, generate_semantic, semantic_history
from .sessions import Placement, create_session, make_placement, settle_placement
from .stream import ChunkedCodec, ChunkedFine, stream_chunks
from .text import TextEncoder
from .voices import Voice, VoiceLibrary, VoiceLike

logger = logging.getLogger(__name__)


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _stage_rngs(seed, n: int = 3) -> list[np.random.Generator]:
    """Independent random streams (one per stage or segment) from one seed, so that
    streaming and one-shot generation draw the same semantic and coarse tokens."""
    if isinstance(seed, np.random.Generator):
        return list(seed.spawn(n))
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def _as_list(value, what: str) -> tuple[list, bool]:
    """(items, was_a_list); refuses an empty list."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise InputError(f"the list of {what} is empty")
        return list(value), True
    return [value], False


def _groups(keys: Sequence) -> dict:
    """Indices grouped by shape or length, so each group runs as one batch."""
    groups: dict = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return groups


class Bark:
    """Bark text-to-audio on ONNX Runtime. Make one with `Bark.load(model_dir)`."""

    sample_rate = SAMPLE_RATE

    def __init__(self, model_dir: Path, config: ModelConfig, placement: Placement):
        self.model_dir = model_dir
        self.config = config
        self.placement = placement
        fp16 = config.precision == "fp16"
        self.sessions = {s: create_session(model_dir / config.graphs[s].file, placement, fp16) for s in STAGES}
        # what the sessions got, not what was asked for: bound buffers must live where the sessions run
        placement = self.placement = settle_placement(placement, self.sessions, config.precision, config.kv_cache)
        self._check_graphs()
        self.semantic_decoder = CausalDecoder(self.sessions["semantic"], config.graphs["semantic"], config.semantic,
                                              config.kv_cache, placement)
        self.coarse_decoder = CausalDecoder(self.sessions["coarse"], config.graphs["coarse"], config.coarse,
                                            config.kv_cache, placement)
        self.text = TextEncoder(model_dir / config.tokenizer)
        self.voices = VoiceLibrary(model_dir / VOICES_DIR)
        self.timings: dict[str, float] = {}  # seconds per stage of the last generate()

    @classmethod
    def load(cls, model_dir: str | Path, providers=None, threads: int | None = None) -> Bark:
        """Load a model directory made by `bark-onnx export`.

        providers: None (CUDA where it starts, then the CPU), or names such as
        ["cuda", "cpu"] (TensorRT only when named). threads: CPU threads per session (default: the cores
        this process may use).
        """
        model_dir = Path(model_dir).expanduser()
        config = ModelConfig.load(model_dir)
        placement = make_placement(providers, threads)
        tts = cls(model_dir, config, placement)
        logger.info("bark-onnx: %s graphs on %s (%d threads)", config.precision,
                    ", ".join(p.replace("ExecutionProvider", "") for p in tts.active_providers()), placement.threads)
        return tts

    def active_providers(self) -> list[str]:
        return self.sessions["semantic"].get_providers()

    def _check_graphs(self) -> None:
        for stage, session in self.sessions.items():
            info = self.config.graphs[stage]
            names = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
            if tuple(names[0]) != info.inputs or tuple(names[1]) != info.outputs:
                raise ModelDirError(
                    f"{info.file} does not have the inputs and outputs config.json lists; "
                    "the directory mixes files of different exports: export it again"
                )

    # ------------------------------------------------------------ stages

    def load_voice(self, voice: VoiceLike) -> Voice | None:
        """A preset name, an .npz path, a dict of three arrays, or None."""
        return self.voices.resolve(voice)

    def text_to_semantic(self, text, voice: VoiceLike = None, temperature=0.7, top_k=None, top_p=None,
                         min_eos_p=0.2, max_gen_duration_s=None, allow_early_stop=True, seed=None,
                         silent: bool = False):
        """Text (or a list) -> semantic tokens (n,) int64 (or a list)."""
        texts, many = _as_list(text, "texts")
        opts = SemanticOptions(temperature, top_k, top_p, min_eos_p, max_gen_duration_s, allow_early_stop)
        tokens = np.stack([self.text.encode(t) for t in texts])
        history = semantic_history(self.load_voice(voice))
        out = generate_semantic(self.semantic_decoder, tokens, history, opts, _rng(seed), silent)
        return out if many else out[0]

    def semantic_to_coarse(self, semantic, voice: VoiceLike = None, temperature=0.7, top_k=None, top_p=None,
                           max_coarse_history=630, sliding_window_len=60, seed=None, silent: bool = False):
        """Semantic tokens (or a list) -> coarse codes (2, n) (or a list)."""
        rows, many = _as_list(semantic, "semantic arrays")
        rows = [check_semantic(r) for r in rows]
        opts = CoarseOptions(temperature, top_k, top_p, max_coarse_history, sliding_window_len)
        out = generate_coarse(self.coarse_decoder, rows, self.load_voice(voice), opts, _rng(seed), silent)
        return out if many else out[0]

    def coarse_to_fine(self, coarse, voice: VoiceLike = None, temperature=0.5, seed=None, silent: bool = True):
        """Coarse codes (2, n) (or a list) -> fine codes (8, n) (or a list)."""
        rows, many = _as_list(coarse, "coarse arrays")
        rows = [check_coarse(r) for r in rows]
        v = self.load_voice(voice)
        rng = _rng(seed)
        out: list = [None] * len(rows)
        for idx in _groups([r.shape for r in rows]).values():
            for i, res in zip(idx, generate_fine(self.sessions["fine"], [rows[i] for i in idx], v, temperature,
                                                 rng, silent)):
                out[i] = res
        return out if many else out[0]

    def decode(self, fine):
        """Fine codes (8, n) (or a list) -> float32 audio (n * 320,) at 24 kHz (or a list)."""
        rows, many = _as_list(fine, "fine arrays")
        checked = []
        for r in rows:
            arr = np.asarray(r)
            if arr.ndim != 2 or arr.shape[0] != N_FINE_CODEBOOKS or arr.shape[1] == 0 or arr.dtype.kind not in "iu":
                raise InputError(f"fine codes must be an integer array of shape (8, T > 0), got {arr.shape}")
            if arr.min() < 0 or arr.max() >= CODEBOOK_SIZE:
                raise InputError(f"fine codes must lie in [0, {CODEBOOK_SIZE}), got [{arr.min()}, {arr.max()}]")
            checked.append(arr.astype(np.int64))
        out: list = [None] * len(checked)
        for idx in _groups([r.shape[1] for r in checked]).values():
            audio = self.sessions["codec"].run(None, {"codes": np.stack([checked[i] for i in idx])})[0]
            for i, a in zip(idx, audio):
                out[i] = np.ascontiguousarray(a, dtype=np.float32)
        return out if many else out[0]

    # ------------------------------------------------------------ whole pipeline

    def generate(self, text, voice: VoiceLike = None, text_temperature=0.7, waveform_temperature=0.7,
                 seed=None, silent: bool = False, output_full: bool = False, fine_temperature=0.5):
        """Text (or a list) -> float32 audio at 24 kHz (or a list).

        With output_full=True returns (audio, prompt), where prompt is the dict
        {semantic_prompt, coarse_prompt, fine_prompt} that `np.savez` stores as a voice.
        """
        rngs = _stage_rngs(seed)
        v = self.load_voice(voice)
        t0 = time.perf_counter()
        semantic = self.text_to_semantic(text, v, temperature=text_temperature, seed=rngs[0], silent=silent)
        t1 = time.perf_counter()
        coarse = self.semantic_to_coarse(semantic, v, temperature=waveform_temperature, seed=rngs[1], silent=silent)
        t2 = time.perf_counter()
        fine = self.coarse_to_fine(coarse, v, temperature=fine_temperature, seed=rngs[2], silent=silent)
        t3 = time.perf_counter()
        audio = self.decode(fine)
        t4 = time.perf_counter()
        self.timings = {"semantic": t1 - t0, "coarse": t2 - t1, "fine": t3 - t2, "codec": t4 - t3}
        if not output_full:
            return audio
        if isinstance(audio, list):
            prompts = [dict(semantic_prompt=s, coarse_prompt=c, fine_prompt=f) for s, c, f in zip(semantic, coarse, fine)]
            return audio, prompts
        return audio, dict(semantic_prompt=semantic, coarse_prompt=coarse, fine_prompt=fine)

    # ------------------------------------------------------------ streaming and long text

    def stream(self, text: str, voice: VoiceLike = None, text_temperature=0.7, waveform_temperature=0.7,
               fine_temperature=0.5, seed=None, silent: bool = True, **semantic_options) -> Iterator[np.ndarray]:
        """Yield float32 chunks of 24 kHz audio as soon as each can be decoded.

        The semantic stage runs first, then audio follows the coarse windows
        (see stream.py for how chunks join and how the result differs from
        `generate`). `semantic_options` go to text_to_semantic (min_eos_p,
        max_gen_duration_s, allow_early_stop, top_k, top_p).
        """
        if not isinstance(text, str):
            raise InputError("stream takes one text; for a list, stream each or use generate([...])")
        v = self.load_voice(voice)
        rngs = _stage_rngs(seed)
        semantic = self.text_to_semantic(text, v, temperature=text_temperature, seed=rngs[0], silent=silent,
                                         **semantic_options)  # errors surface here, before the first chunk
        opts = CoarseOptions(waveform_temperature)
        return self._stream_semantic(semantic, v, opts, fine_temperature, rngs, silent)

    def _stream_semantic(self, semantic, voice, opts, fine_temperature, rngs, silent):
        """The chunk generator; its return value is the generation as a voice prompt."""
        windows = coarse_windows(self.coarse_decoder, [check_semantic(semantic)], voice, opts, rngs[1], silent)
        fine = ChunkedFine(self.sessions["fine"], voice, fine_temperature, rngs[2])
        last_coarse = []

        def tracked():
            for rows in windows:
                last_coarse[:] = rows
                yield rows

        yield from stream_chunks(tracked(), fine, ChunkedCodec(self.sessions["codec"]))
        st = fine.state
        return dict(semantic_prompt=semantic, coarse_prompt=last_coarse[0], fine_prompt=st.codes[:, st.n_history:])

    def stream_long(self, text: str, voice: VoiceLike = None, history: str = "voice", pause_s: float = 0.25,
                    max_words: int = MAX_WORDS, text_temperature=0.7, waveform_temperature=0.7,
                    fine_temperature=0.5, seed=None, silent: bool = False) -> Iterator[np.ndarray]:
        """Long text, streamed: segments at sentence/clause boundaries, joined by `pause_s` of silence.

        history="voice": every segment uses `voice` as its history (steady timbre);
        history="previous": each segment continues from the previous one's generation.
        """
        if history not in ("voice", "previous"):
            raise InputError(f"history must be 'voice' or 'previous', got {history!r}")
        if pause_s < 0:
            raise InputError(f"pause_s must be >= 0, got {pause_s}")
        segments = split_text(text, max_words)
        v = self.load_voice(voice)
        rngs = _stage_rngs(seed, len(segments))
        return self._stream_segments(segments, v, history, pause_s, text_temperature, waveform_temperature,
                                     fine_temperature, rngs, silent)

    def _stream_segments(self, segments, voice, history, pause_s, text_t, wave_t, fine_t, rngs, silent):
        pause = np.zeros(int(round(pause_s * self.sample_rate)), np.float32)
        current = voice
        for i, segment in enumerate(tqdm(segments, desc="segments", unit="seg", disable=silent)):
            if i and pause.size:
                yield pause
            r = _stage_rngs(rngs[i])
            semantic = self.text_to_semantic(segment, current, temperature=text_t, seed=r[0], silent=True)
            prompt = yield from self._stream_semantic(semantic, current, CoarseOptions(wave_t), fine_t, r, True)
            if history == "previous":
                current = prompt

    def generate_long(self, text: str, voice: VoiceLike = None, history: str = "voice", pause_s: float = 0.25,
                      max_words: int = MAX_WORDS, text_temperature=0.7, waveform_temperature=0.7,
                      fine_temperature=0.5, seed=None, silent: bool = False) -> np.ndarray:
        """Long text in one call: `stream_long` collected into one float32 array."""
        chunks = list(self.stream_long(text, voice, history, pause_s, max_words, text_temperature,
                                       waveform_temperature, fine_temperature, seed, silent))
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
