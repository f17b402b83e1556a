"""`bark-onnx demo`: Bark's real shapes with random weights, the whole pipeline, timed.

It needs no download: the random checkpoint and its export are cached under
$XDG_CACHE_HOME/bark_onnx/random-<size>-<precision>. The audio is noise; the
timings are real, because speed depends on shapes, not on weight values.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from bark_onnx.runtime.bark import Bark
from bark_onnx.runtime.model.paths import cache_root
from bark_onnx.runtime.model.config import CONFIG_FILE
from bark_onnx.runtime.constants import SEMANTIC_RATE_HZ
from bark_onnx.runtime.stages.semantic import duration_for_tokens

from .exporter import export_model
from .factory import write_checkpoint

BANNER = "RANDOM WEIGHTS: the audio is noise; the timings are real (they depend on shapes, not values)"


def random_model(size: str, precision: str, progress: bool = True) -> Path:
    """A cached export of a random-weight checkpoint of Bark's `size` shapes."""
    target = cache_root() / f"random-{size}-{precision}"
    if (target / CONFIG_FILE).is_file():
        return target
    with tempfile.TemporaryDirectory(prefix="bark-onnx-random-") as tmp:
        if progress:
            print(f"writing a random-weight bark-{size} checkpoint ...", file=sys.stderr)
        checkpoint = write_checkpoint(Path(tmp) / "checkpoint", layout="hf", size=size)
        return export_model(str(checkpoint), target, precision=precision, progress=progress, overwrite=True)


def run_demo(size: str = "small", precision: str = "fp32", seconds: float = 13.0, out: str | None = None,
             providers=None, threads: int | None = None, silent: bool = False) -> int:
    model_dir = random_model(size, precision, progress=not silent)
    tts = Bark.load(model_dir, providers=providers, threads=threads)
    n_tokens = max(1, int(round(seconds * SEMANTIC_RATE_HZ)))
    print(BANNER, file=sys.stderr)
    times = {}
    t = time.perf_counter()
    semantic = tts.text_to_semantic("Hello, this is a speed check.", temperature=0.7, seed=0, silent=silent,
                                    allow_early_stop=False, max_gen_duration_s=duration_for_tokens(n_tokens))
    times["semantic"], t = time.perf_counter() - t, time.perf_counter()
    coarse = tts.semantic_to_coarse(semantic, temperature=0.7, seed=1, silent=silent)
    times["coarse"], t = time.perf_counter() - t, time.perf_counter()
    fine = tts.coarse_to_fine(coarse, temperature=0.5, seed=2, silent=silent)
    times["fine"], t = time.perf_counter() - t, time.perf_counter()
    audio = tts.decode(fine)
    times["codec"] = time.perf_counter() - t
    audio_s = len(audio) / tts.sample_rate
    total = sum(times.values())
    providers_used = ", ".join(p.replace("ExecutionProvider", "") for p in tts.active_providers())
    print(f"bark-{size} shapes, {precision}, {providers_used}, {tts.placement.threads} threads")
    work = {"semantic": f"{len(semantic)} tokens", "coarse": f"{coarse.size} tokens",
            "fine": f"{fine.shape[1]} frames", "codec": f"{audio_s:.1f} s of audio"}
    for stage, sec in times.items():
        print(f"  {stage:9s} {sec:7.2f} s   {work[stage]}")
    print(f"  {'total':9s} {total:7.2f} s   real-time factor {total / audio_s:.2f} "
          f"({'faster' if total < audio_s else 'slower'} than real time)")
    if out:
        from bark_onnx.runtime.audio import write_wav

        write_wav(out, audio)
        print(f"wrote {out} (noise: {BANNER.split(':')[0].lower()})", file=sys.stderr)
    return 0
