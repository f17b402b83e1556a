"""`bark-onnx say`, `voices` and `demo`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .audio import write_wav
from .errors import BarkOnnxError


def _providers(text: str | None):
    return None if not text else [p.strip() for p in text.split(",") if p.strip()]


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--providers", help="comma-separated execution providers, e.g. cuda,cpu (default: best available)")
    p.add_argument("--threads", type=int, help="CPU threads per session (default: the cores available)")


def add_parsers(sub) -> None:
    p = sub.add_parser("say", help="speak a text into a 24 kHz WAV file")
    p.add_argument("text", help="what to say; cues like [laughs] or ♪ work as in Bark")
    p.add_argument("--out", required=True, help="WAV file to write ('-' with --stream: raw 16-bit PCM to stdout)")
    p.add_argument("--voice", help="voice preset (v2/en_speaker_6, announcer, ...) or an .npz file")
    p.add_argument("--model", help="model directory (default: suno/bark-small exported to the cache on first use, "
                                   "fp16 where CUDA runs, else fp32)")
    p.add_argument("--seed", type=int, help="random seed for reproducible audio")
    p.add_argument("--text-temp", type=float, default=0.7, help="semantic temperature (0: greedy)")
    p.add_argument("--waveform-temp", type=float, default=0.7, help="coarse temperature (0: greedy)")
    p.add_argument("--stream", action="store_true",
                   help="write audio as it is made: a WAV that grows, or raw PCM (s16le, 24 kHz, mono) with --out -")
    p.add_argument("--long", action="store_true",
                   help="long text: split at sentences and clauses, one segment after another")
    p.add_argument("--silent", action="store_true", help="no progress bars")
    _add_runtime_options(p)
    p.set_defaults(func=cmd_say)

    p = sub.add_parser("voices", help="list the voice presets available offline")
    p.add_argument("--model", help="model directory whose voices/ to include")
    p.set_defaults(func=cmd_voices)

    p = sub.add_parser("demo", help="offline check: a random-weight model of Bark's real shapes, timed per stage")
    p.add_argument("--size", choices=("small", "large", "tiny"), default="small",
                   help="bark-small or bark shapes (tiny: a 2-layer model, for a quick install check)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8", "int4"),
                   help="graphs to build (default: fp16 where CUDA runs, else fp32)")
    p.add_argument("--seconds", type=float, default=13.0, help="audio length to generate (EOS off)")
    p.add_argument("--out", help="also write the (noise) WAV here")
    p.add_argument("--silent", action="store_true", help="no progress bars")
    _add_runtime_options(p)
    p.set_defaults(func=cmd_demo)


def _load(model: str | None, providers, threads, silent: bool):
    from .bark import Bark
    from .cache import ensure_model

    model_dir = Path(model) if model else ensure_model(small=True, progress=not silent, providers=_providers(providers))
    return Bark.load(model_dir, providers=_providers(providers), threads=threads)


def cmd_say(args) -> int:
    to_stdout = args.out == "-"
    if to_stdout and not args.stream:
        raise BarkOnnxError("--out - (raw PCM to stdout) needs --stream")
    if not to_stdout and Path(args.out).suffix.lower() != ".wav":
        raise BarkOnnxError(f"--out must name a .wav file (or '-' with --stream), got {args.out!r}")
    tts = _load(args.model, args.providers, args.threads, args.silent)
    options = dict(voice=args.voice, text_temperature=args.text_temp, waveform_temperature=args.waveform_temp,
                   seed=args.seed, silent=args.silent)
    start = time.perf_counter()
    if args.stream:
        chunks = tts.stream_long(args.text, **options) if args.long else tts.stream(args.text, **options)
        n = _write_stream(chunks, None if to_stdout else Path(args.out))
    else:
        audio = tts.generate_long(args.text, **options) if args.long else tts.generate(args.text, **options)
        write_wav(args.out, audio)
        n = len(audio)
    if not args.silent:
        took = time.perf_counter() - start
        print(f"wrote {args.out} ({n / tts.sample_rate:.1f} s of audio in {took:.1f} s)", file=sys.stderr)
    return 0


def _write_stream(chunks, path: Path | None) -> int:
    """Write chunks as they come; returns the samples written. A failed stream leaves no file."""
    from .audio import GrowingWav, write_pcm

    wav = GrowingWav(path) if path is not None else None
    n = 0
    try:
        for chunk in chunks:
            if wav is not None:
                wav.append(chunk)
            else:
                write_pcm(None, chunk)
            n += len(chunk)
    except BaseException:
        if wav is not None:
            wav.discard()
        raise
    if wav is not None:
        wav.close()
    return n


def cmd_voices(args) -> int:
    from .config import VOICES_DIR
    from .voices import VoiceLibrary

    library = VoiceLibrary(Path(args.model) / VOICES_DIR if args.model else None, use_hub=False)
    sources = library.sources()
    if not sources:
        print("no voice presets installed; 'pip install --no-deps bark==0.1.5' brings Suno's 130, "
              "and any .npz voice file works with --voice", file=sys.stderr)
        return 1
    for name, folder in sources.items():
        print(f"{name}\t{folder}")
    return 0


def cmd_demo(args) -> int:
    try:
        from .export.demo import run_demo
    except ImportError as err:
        raise BarkOnnxError(f"demo needs the export extra to build its random model: "
                            f"pip install 'bark-onnx[export]' ({err})") from None
    from .cache import machine_precision

    providers = _providers(args.providers)
    return run_demo(size=args.size, precision=args.precision or machine_precision(providers), seconds=args.seconds,
                    out=args.out, providers=providers, threads=args.threads, silent=args.silent)
