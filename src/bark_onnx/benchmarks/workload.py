"""The fixed work every backend runs: one 13 s segment of Bark, stage by stage.

650 semantic tokens forced (EOS off), which the coarse stage turns into 1952
tokens (976 frames), the fine stage into 8 x 976 codes and the codec into
13.0 s of audio. Stage inputs are fixed random tokens (seeded), so every
backend does the same work whatever its sampled outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bark_onnx.runtime.stages.coarse import n_coarse_steps
from bark_onnx.runtime.constants import SAMPLE_RATE, SAMPLES_PER_FRAME
from bark_onnx.runtime.stages.semantic import duration_for_tokens

STAGES = ("semantic", "coarse", "fine", "codec")
ONNX_ONLY = ("first_audio", "semantic_b1", "semantic_b8")  # streaming and batching: this runtime's features
BATCH = 8
ALL_BACKENDS = "onnx-fp32,onnx-int8,onnx-int4,reference,transformers"
TEXT = "Hello, my name is Suno. And, uh — and I like pizza. [laughs] But I also have other interests."
SEED = 0


@dataclass(frozen=True)
class Workload:
    semantic_tokens: int = 650

    @property
    def coarse_tokens(self) -> int:
        return n_coarse_steps(self.semantic_tokens)

    @property
    def frames(self) -> int:
        return self.coarse_tokens // 2

    @property
    def audio_seconds(self) -> float:
        return self.frames * SAMPLES_PER_FRAME / SAMPLE_RATE

    @property
    def max_gen_duration_s(self) -> float:
        """Makes the semantic stage stop after exactly `semantic_tokens` tokens."""
        return duration_for_tokens(self.semantic_tokens)

    def units(self) -> dict[str, tuple[float, str]]:
        """Work per stage and its unit, for throughput figures."""
        return {"semantic": (self.semantic_tokens, "tokens"), "coarse": (self.coarse_tokens, "tokens"),
                "fine": (self.frames, "frames"), "codec": (self.audio_seconds, "s of audio"),
                "segment": (self.audio_seconds, "s of audio"), "first_audio": (1, "first chunk"),
                "semantic_b1": (self.semantic_tokens, "tokens"),
                "semantic_b8": (BATCH * self.semantic_tokens, "tokens")}

    def inputs(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(SEED)
        return {
            "semantic": rng.integers(0, 10_000, self.semantic_tokens),
            "coarse": rng.integers(0, 1024, (2, self.frames)),
            "fine": rng.integers(0, 1024, (8, self.frames)),
        }


SEGMENT = Workload()
PRIMER = Workload(semantic_tokens=40)  # a short run of every stage before timing (the warm-up)
