"""`bark-onnx bench <what>`: the benchmarks' commands and their arguments (commands.py runs each).

    stages       every stage and a whole segment against the PyTorch reference and transformers
    concurrency  many requests on one model against the same ones in a row
    serve        a speech server under load, then a soak
    footprint    disk per graph and peak memory of a generation
    host         what each row's token costs the host (small test model, 1 to 32 requests)
    roofline     each graph call type against this machine's measured GEMM and memory rates
    first-audio  a stream's first chunk against the whole one-shot request
    fastpath     the coarse window's prefill and step, per graph variant
    int8         the coarse graph's two int8 forms
    ab           two model directories in one process, stage by stage
    compare      exit 1 when a stage got slower than in a baseline run
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bark_onnx.runtime.commands import Parser, count_type, threads_type

from .ab import STAGES as AB_STAGES
from .commands import (
    cmd_ab, cmd_bench, cmd_compare, cmd_concurrency, cmd_fastpath, cmd_first_audio, cmd_footprint, cmd_host, cmd_int8,
    cmd_roofline, cmd_serve,
)
from .workload import ALL_BACKENDS


def levels_type(text: str) -> tuple[int, ...]:
    """--levels: comma-separated positive integers."""
    try:
        levels = tuple(int(x) for x in text.split(","))
    except ValueError:
        levels = ()
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of positive integers, e.g. 1,8,32")
    return levels


SIZES = ("tiny", "small", "large")
CACHE = "where the random checkpoints and exports are kept"
SHARED_CACHE = CACHE + " (shared with stages)"
JSON_OUT = "also write the figures as JSON here"


def _size(p, default: str | None = "small", **kw) -> None:
    p.add_argument("--size", choices=SIZES, default=default, **kw)


def _threads(p, help: str = "threads (default: all cores)") -> None:
    p.add_argument("--threads", type=threads_type, help=help)


def _providers(p, help: str = "ONNX Runtime providers, e.g. cuda,cpu") -> None:
    p.add_argument("--providers", help=help)


def _rounds(p, default: int, help: str) -> None:
    p.add_argument("--rounds", type=count_type, default=default, help=help)


def add_parsers(sub) -> None:
    """One subcommand per benchmark (`bark-onnx bench --help` lists them in this order)."""
    for add in (_add_stages, _add_roofline, _add_fastpath, _add_concurrency, _add_host, _add_first_audio, _add_int8,
                _add_footprint, _add_ab, _add_compare, _add_serve):
        add(sub)


def _add_stages(sub) -> None:
    p = sub.add_parser("stages", help="time every stage against the PyTorch reference and transformers")
    _size(p, help="transformer shapes: tiny (a smoke test), small (bark-small), large (bark)")
    p.add_argument("--backends", default=ALL_BACKENDS, help=f"comma-separated (default {ALL_BACKENDS})")
    p.add_argument("--stages", default="semantic,coarse,fine,codec,segment,first_audio,semantic_b1,semantic_b8",
                   help="first_audio (streaming) and semantic_b1/_b8 (batching) run on ONNX backends only")
    _rounds(p, 3, "timed rounds per stage, after a warm-up")
    p.add_argument("--segment-rounds", type=count_type, default=2, help="timed rounds of the whole segment")
    _threads(p, "threads per backend (default: all cores)")
    _providers(p, "ONNX Runtime providers for the onnx backends, e.g. cuda,cpu")
    p.add_argument("--torch-device", choices=("cpu", "cuda"), default="cpu",
                   help="where the reference and transformers run: cpu (fp32) or cuda (fp16, as on a GPU)")
    p.add_argument("--out", default="bench-results", help="folder for results.json, results.md, chart.png")
    p.add_argument("--cache", type=Path, help=CACHE)
    p.add_argument("--no-quality", action="store_true",
                   help="skip the precision price (fp16/int8/int4 against fp32, teacher-forced)")
    p.set_defaults(func=cmd_bench)


def _add_roofline(sub) -> None:
    p = sub.add_parser("roofline", help="each graph call type (steps, prefill, fine pass, codec chunk) against "
                       "this machine's measured GEMM and memory rates")
    _size(p)
    p.add_argument("--precision", choices=("fp32", "int8"), default="int8")
    p.add_argument("--model", type=Path, help="an exported model directory instead of a random-weight export")
    _rounds(p, 3, "timed prefills, fine passes and codec chunks")
    _threads(p)
    p.add_argument("--out", help=JSON_OUT)
    p.add_argument("--cache", type=Path, help=CACHE)
    p.set_defaults(func=cmd_roofline)


def _add_fastpath(sub) -> None:
    p = sub.add_parser("fastpath", help="time the coarse window prefill and step of each fast-path variant")
    _size(p)
    _threads(p)
    p.add_argument("--out", help="also write the rows as JSON here")
    p.set_defaults(func=cmd_fastpath)


def _add_concurrency(sub) -> None:
    p = sub.add_parser("concurrency", help="many requests on one model against the same ones in a row")
    _size(p)
    p.add_argument("--precisions", default="fp32,int8", help="comma-separated (default fp32,int8)")
    p.add_argument("--levels", type=levels_type, default=(1, 2, 4, 8),
                   help="concurrent requests to measure (default 1,2,4,8)")
    p.add_argument("--tokens", type=count_type, default=200, help="semantic tokens per generation (200: 6 s of audio)")
    p.add_argument("--semantic-tokens", type=count_type, default=650, help="tokens per text_to_semantic request")
    _threads(p)
    _providers(p)
    p.add_argument("--fine-batch", type=count_type, help="fine windows per call (default: 4 on a GPU, 1 on the CPU)")
    p.add_argument("--codec-batch", type=count_type, help="codec chunks (up to 320 frames) per call "
                   "(default: 4 on a GPU, 1 on the CPU)")
    p.add_argument("--out", help="folder for concurrency.json and concurrency.md")
    p.add_argument("--cache", type=Path, help=CACHE)
    p.set_defaults(func=cmd_concurrency)


def _add_host(sub) -> None:
    p = sub.add_parser("host", help="what each row's token costs the host: 1, 8 and 32 requests on the small test model")
    p.add_argument("--levels", type=levels_type, default=(1, 8, 32), help="requests at once (default 1,8,32)")
    p.add_argument("--tokens", type=count_type, default=200, help="semantic tokens per request (default 200)")
    _rounds(p, 5, "timed rounds per level, after a warm-up")
    p.add_argument("--draws", default="graph,host", help="where tokens are drawn: graph, host or both (default both)")
    p.add_argument("--edges", action="store_true",
                   help="also count the draws where the graph and Bark's float64 rule differ on a long run")
    _size(p, "tiny", help="model shapes (default tiny)")
    p.add_argument("--precision", choices=("fp32", "int8", "int4"), default="fp32", help="graphs (default fp32)")
    _threads(p)
    p.add_argument("--cache", type=Path, help=SHARED_CACHE)
    p.add_argument("--out", help=JSON_OUT)
    p.set_defaults(func=cmd_host)


def _add_first_audio(sub) -> None:
    p = sub.add_parser("first-audio", help="a stream's time to first audio against the whole one-shot request")
    _size(p)
    p.add_argument("--precision", choices=("fp32", "fp16", "int8", "int4"), default="int8")
    p.add_argument("--voices", default="v2/en_speaker_6,none", help="comma-separated presets, 'none' for no voice")
    _rounds(p, 3, "timed rounds, after a warm-up")
    p.add_argument("--pacing", choices=("first-audio", "free", "both"), default="first-audio",
                   help="the engine's pacing of a stream's semantic run until its first audio")
    _threads(p)
    _providers(p)
    p.add_argument("--cache", type=Path, help=SHARED_CACHE)
    p.add_argument("--out", help=JSON_OUT)
    p.set_defaults(func=cmd_first_audio)


def _add_int8(sub) -> None:
    p = sub.add_parser("int8", help="time the coarse graph's two int8 forms (activations per tensor or per row)")
    _size(p)
    _threads(p)
    _rounds(p, 5, "alternating timed rounds, after a warm-up")
    p.add_argument("--cache", type=Path, help="where the random checkpoints are kept (shared with stages)")
    p.add_argument("--out", help=JSON_OUT)
    p.set_defaults(func=cmd_int8)


def _add_footprint(sub) -> None:
    p = sub.add_parser("footprint", help="MB on disk per graph and peak memory of one 13 s generation")
    _size(p)
    p.add_argument("--precisions", default="int8", help="comma-separated: fp32, fp16, int8, int4 (default int8)")
    _threads(p)
    p.add_argument("--cache", type=Path, help=SHARED_CACHE)
    p.add_argument("--generations", type=count_type, default=1, help="segments generated one after the other")
    p.add_argument("--out", help=JSON_OUT)
    p.set_defaults(func=cmd_footprint)


def _add_ab(sub) -> None:
    p = sub.add_parser("ab", help="two model directories in one process, stage by stage in alternating rounds")
    p.add_argument("model_a", help="model directory A (e.g. the export before a change)")
    p.add_argument("model_b", help="model directory B; the ratios printed are B / A")
    p.add_argument("--stages", default="semantic,coarse,fine,codec", help="comma-separated, of " + ",".join(AB_STAGES))
    _rounds(p, 5, "alternating timed rounds, after a warm-up")
    _threads(p, "threads per model (default: all cores)")
    _providers(p)
    p.add_argument("--out", help=JSON_OUT)
    p.set_defaults(func=cmd_ab)


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="exit 1 when a stage is slower than in a baseline results.json")
    p.add_argument("baseline", help="results.json (or pytest-benchmark JSON) of the baseline run")
    p.add_argument("current", help="results.json (or pytest-benchmark JSON) of the run to check")
    p.add_argument("--threshold", type=float, default=0.15, help="allowed slowdown of a median (0.15 = 15%%)")
    p.add_argument("--backends", help="only these backends (default: all in both files)")
    p.set_defaults(func=cmd_compare)


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="load a speech server at 1x and 2x its max batch (times its replicas), "
                                     "then a soak")
    p.add_argument("--model", help="start `bark-onnx serve` on this model (127.0.0.1, a free port)")
    _size(p, None, help="or on a random-weight model of these shapes (made and cached as `bench` does)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8", "int4"), default="int8",
                   help="the random-weight model's precision")
    p.add_argument("--url", help="or load a running server, e.g. http://127.0.0.1:8000")
    p.add_argument("--max-batch", type=int, default=8, help="the started server's --max-batch")
    p.add_argument("--max-queue", type=int, default=64, help="the started server's --max-queue")
    _threads(p, "the started server's --threads")
    p.add_argument("--replicas", type=int, help="start `bark-onnx serve --ray` with this many replicas (with --url: "
                                                "how many the server has); the loads scale with them")
    p.add_argument("--requests", type=int, default=32, help="requests at each concurrency (1x, 2x)")
    p.add_argument("--soak", type=int, default=300, help="requests of the soak (0: none)")
    p.add_argument("--text", default=None, help="what every request says")
    p.add_argument("--max-gen-duration-s", type=float, help="cap each request's audio (seconds)")
    p.add_argument("--api-key", help="the server's key (default: $BARK_ONNX_API_KEY)")
    p.add_argument("--request-timeout", type=float, default=900.0, help="client time limit per request (s)")
    p.add_argument("--time-limit", type=float, default=3600.0, help="stop sending after this many seconds")
    p.add_argument("--out", help="also write the results as JSON here")
    p.set_defaults(func=cmd_serve)


def main(argv: list[str]) -> int:
    """`bark-onnx bench ARGV`: parse and run one benchmark command (errors are the caller's to print)."""
    parser = Parser(prog="bark-onnx bench", description="Benchmarks against the PyTorch reference and transformers "
                                                         "(the bench and export extras).")
    add_parsers(parser.add_subparsers(dest="what", required=True, metavar="what"))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
