"""What a generation returns: the audio, the tokens of every stage and where the time went."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .constants import SAMPLE_RATE


@dataclass
class Generation:
    """One generation. `prompt` is the voice that continues it (what `np.savez` stores)."""

    audio: np.ndarray  # float32 (n,), mono
    semantic: np.ndarray  # (n_semantic,) int64
    coarse: np.ndarray  # (2, frames) int64
    fine: np.ndarray  # (8, frames) int64
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, wall clock
    sample_rate: int = SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate

    @property
    def prompt(self) -> dict[str, np.ndarray]:
        """{semantic_prompt, coarse_prompt, fine_prompt}: use it as `voice=` or save it with np.savez."""
        return {"semantic_prompt": self.semantic, "coarse_prompt": self.coarse, "fine_prompt": self.fine}


def join(parts: list[Generation], pause: np.ndarray) -> Generation:
    """Segments of a long text as one generation: audio joined by `pause`, tokens end to end."""
    audio: list[np.ndarray] = []
    for i, part in enumerate(parts):
        if i and pause.size:
            audio.append(pause)
        audio.append(part.audio)
    timings: dict[str, float] = {}
    for part in parts:
        for stage, seconds in part.timings.items():
            timings[stage] = timings.get(stage, 0.0) + seconds
    return Generation(
        audio=np.concatenate(audio) if audio else np.zeros(0, np.float32),
        semantic=np.concatenate([p.semantic for p in parts]),
        coarse=np.concatenate([p.coarse for p in parts], axis=1),
        fine=np.concatenate([p.fine for p in parts], axis=1),
        timings=timings,
    )
