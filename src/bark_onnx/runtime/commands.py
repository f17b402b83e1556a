"""`bark-onnx say` and `voices`, and the argument types the other commands share.

`say` without --model exports the default model on first use with the exporter that the
command line hands it (cli.py): the runtime holds no export code of its own.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from .audio import GrowingWav, write_pcm
from .errors import BarkOnnxError
from .model.cache import Exporter
from .request import Request
from .sessions.providers import provider_names


class Parser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr and exit status 2 (subcommand parsers share this class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _number(kind, test, want: str):
    """An argparse type: `kind(text)` that passes `test`, else a one-line error saying what is wanted."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not test(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {want}")
        return value
    return parse


seed_type = _number(int, lambda v: v >= 0, "a non-negative integer")
temperature_type = _number(float, lambda v: math.isfinite(v) and v >= 0, "a temperature >= 0 (0: greedy)")
threads_type = _number(int, lambda v: v >= 1, "a positive number of threads")
seconds_type = _number(float, lambda v: math.isfinite(v) and v > 0, "a positive number of seconds")
count_type = _number(int, lambda v: v >= 1, "a positive integer")


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--providers", help="comma-separated execution providers, e.g. cuda,cpu (default: best available)")
    p.add_argument("--threads", type=threads_type, help="CPU threads per session (default: the cores available)")


def add_parsers(sub, exporter: Exporter | None = None) -> None:
    """`say` and `voices`; `exporter` makes say's default model when it is not in the cache."""
    p = sub.add_parser("say", help="speak a text into a 24 kHz WAV file")
    p.add_argument("text", help="what to say; cues like [laughs] or ♪ work as in Bark")
    p.add_argument("--out", required=True, help="WAV file to write ('-' with --stream: raw 16-bit PCM to stdout)")
    p.add_argument("--voice", help="voice preset (v2/en_speaker_6, announcer, ...) or an .npz file")
    p.add_argument("--model", help="model directory or hub id (default: suno/bark-small exported to the cache on "
                                   "first use, fp16 where CUDA runs, else int8)")
    p.add_argument("--seed", type=seed_type, help="random seed for reproducible audio (a non-negative integer)")
    p.add_argument("--text-temp", type=temperature_type, help="semantic temperature (default 0.7; 0: greedy)")
    p.add_argument("--waveform-temp", type=temperature_type, help="coarse temperature (default 0.7; 0: greedy)")
    p.add_argument("--stream", action="store_true",
                   help="write audio as it is made: into a temporary WAV beside --out, renamed into place when "
                        "done (Ctrl-C keeps what was made), or raw PCM (s16le, 24 kHz, mono) with --out -")
    p.add_argument("--long", action="store_true",
                   help="long text: split at sentences and clauses, one segment after another")
    p.add_argument("--silent", action="store_true", help="no progress bars")
    p.add_argument("--offline", action="store_true",
                   help="never use the network (also BARK_ONNX_OFFLINE=1): local voices and models only")
    add_runtime_options(p)
    p.set_defaults(func=cmd_say, exporter=exporter)

    p = sub.add_parser("voices", help="list the voice presets available offline")
    p.add_argument("--model", help="model directory whose voices/ to include")
    p.set_defaults(func=cmd_voices)


def _load(model: str | None, providers, threads, silent: bool, offline: bool = False,
          exporter: Exporter | None = None):
    from .bark import Bark
    from .model.cache import model_or_default

    providers = provider_names(providers)
    model = model_or_default(model, progress=not silent, providers=providers, offline=offline, exporter=exporter)
    return Bark.load(model, providers=providers, threads=threads, offline=offline)


def cmd_say(args) -> int:
    to_stdout = args.out == "-"
    if to_stdout and not args.stream:
        raise BarkOnnxError("--out - (raw PCM to stdout) needs --stream")
    if not to_stdout and Path(args.out).suffix.lower() != ".wav":
        raise BarkOnnxError(f"--out must name a .wav file (or '-' with --stream), got {args.out!r}")
    start = time.perf_counter()
    temperatures = {name: value for name, value in (("text_temperature", args.text_temp),
                                                    ("waveform_temperature", args.waveform_temp)) if value is not None}
    request = Request.make(args.text, args.voice, seed=args.seed, long=args.long, stream=args.stream,
                           silent=args.silent, **temperatures)  # bad input fails here, before the model loads
    wav = None if to_stdout else GrowingWav(args.out)  # a bad path fails here, before any work
    try:
        tts = _load(args.model, args.providers, args.threads, args.silent, args.offline, args.exporter)
        n = _say(tts, request, wav)
    except KeyboardInterrupt:
        if wav is not None and wav.keep_partial():
            print(f"bark-onnx: kept the {wav.n_samples / wav.rate:.1f} s made so far in {args.out}", file=sys.stderr)
        raise
    except BaseException:
        if wav is not None:
            wav.discard()
        raise
    if wav is not None:
        wav.commit()
    if not args.silent:
        took = time.perf_counter() - start
        print(f"wrote {args.out} ({n / tts.sample_rate:.1f} s of audio in {took:.1f} s)", file=sys.stderr)
    return 0


def _say(tts, request: Request, wav: GrowingWav | None) -> int:
    """Generate into `wav` (or raw PCM to stdout); returns the samples written."""
    job = tts.submit(request)
    try:
        if not request.stream:
            audio = job.result().audio
            wav.append(audio)
            return len(audio)
        n = 0
        for chunk in job:
            if wav is not None:
                wav.append(chunk)
            else:
                write_pcm(None, chunk)
            n += len(chunk)
        return n
    finally:
        job.cancel()  # interrupted: stop generating (a no-op once done)


def cmd_voices(args) -> int:
    from .model.config import VOICES_DIR
    from .model.voices import VoiceLibrary

    library = VoiceLibrary(Path(args.model) / VOICES_DIR if args.model else None, use_hub=False)
    sources = library.sources()
    if not sources:
        print("no voice presets installed; 'pip install --no-deps bark==0.1.5' brings Suno's 130, "
              "and any .npz voice file works with --voice", file=sys.stderr)
        return 1
    for name, folder in sources.items():
        print(f"{name}\t{folder}")
    return 0
