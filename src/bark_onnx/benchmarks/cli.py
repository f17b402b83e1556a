"""`bark-onnx bench <what>`: the benchmarks' commands, their arguments, and the module that runs each.

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
import json
import sys
from pathlib import Path

from bark_onnx.runtime.commands import Parser, count_type, threads_type
from bark_onnx.runtime.files import write_atomic
from bark_onnx.runtime.sessions.providers import provider_names

from . import report
from .ab import STAGES as AB_STAGES
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


def add_parsers(sub) -> None:
    p = sub.add_parser("stages", help="time every stage against the PyTorch reference and transformers")
    p.add_argument("--size", choices=("tiny", "small", "large"), default="small",
                   help="transformer shapes: tiny (a smoke test), small (bark-small), large (bark)")
    p.add_argument("--backends", default=ALL_BACKENDS, help=f"comma-separated (default {ALL_BACKENDS})")
    p.add_argument("--stages", default="semantic,coarse,fine,codec,segment,first_audio,semantic_b1,semantic_b8",
                   help="first_audio (streaming) and semantic_b1/_b8 (batching) run on ONNX backends only")
    p.add_argument("--rounds", type=count_type, default=3, help="timed rounds per stage, after a warm-up")
    p.add_argument("--segment-rounds", type=count_type, default=2, help="timed rounds of the whole segment")
    p.add_argument("--threads", type=threads_type, help="threads per backend (default: all cores)")
    p.add_argument("--providers", help="ONNX Runtime providers for the onnx backends, e.g. cuda,cpu")
    p.add_argument("--torch-device", choices=("cpu", "cuda"), default="cpu",
                   help="where the reference and transformers run: cpu (fp32) or cuda (fp16, as on a GPU)")
    p.add_argument("--out", default="bench-results", help="folder for results.json, results.md, chart.png")
    p.add_argument("--cache", type=Path, help="where the random checkpoints and exports are kept")
    p.add_argument("--no-quality", action="store_true",
                   help="skip the precision price (fp16/int8/int4 against fp32, teacher-forced)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("roofline", help="each graph call type (steps, prefill, fine pass, codec chunk) against "
                       "this machine's measured GEMM and memory rates")
    p.add_argument("--size", choices=("tiny", "small", "large"), default="small")
    p.add_argument("--precision", choices=("fp32", "int8"), default="int8")
    p.add_argument("--model", type=Path, help="an exported model directory instead of a random-weight export")
    p.add_argument("--rounds", type=count_type, default=3, help="timed prefills, fine passes and codec chunks")
    p.add_argument("--threads", type=threads_type, help="threads (default: all cores)")
    p.add_argument("--out", help="also write the result as JSON here")
    p.add_argument("--cache", type=Path, help="where the random checkpoints and exports are kept")
    p.set_defaults(func=cmd_roofline)

    p = sub.add_parser("fastpath", help="time the coarse window prefill and step of each fast-path variant")
    p.add_argument("--size", choices=("tiny", "small", "large"), default="small")
    p.add_argument("--threads", type=threads_type, help="threads (default: all cores)")
    p.add_argument("--out", help="also write the rows as JSON here")
    p.set_defaults(func=cmd_fastpath)

    p = sub.add_parser("concurrency", help="many requests on one model against the same ones in a row")
    p.add_argument("--size", choices=("tiny", "small", "large"), default="small")
    p.add_argument("--precisions", default="fp32,int8", help="comma-separated (default fp32,int8)")
    p.add_argument("--levels", type=levels_type, default=(1, 2, 4, 8),
                   help="concurrent requests to measure (default 1,2,4,8)")
    p.add_argument("--tokens", type=count_type, default=200, help="semantic tokens per generation (200: 6 s of audio)")
    p.add_argument("--semantic-tokens", type=count_type, default=650, help="tokens per text_to_semantic request")
    p.add_argument("--threads", type=threads_type, help="threads (default: all cores)")
    p.add_argument("--providers", help="ONNX Runtime providers, e.g. cuda,cpu")
    p.add_argument("--fine-batch", type=count_type, help="fine windows per call (default: 4 on a GPU, 1 on the CPU)")
    p.add_argument("--codec-batch", type=count_type, help="codec chunks (up to 320 frames) per call "
                   "(default: 4 on a GPU, 1 on the CPU)")
    p.add_argument("--out", help="folder for concurrency.json and concurrency.md")
    p.add_argument("--cache", type=Path, help="where the random checkpoints and exports are kept")
    p.set_defaults(func=cmd_concurrency)

    p = sub.add_parser("host", help="what each row's token costs the host: 1, 8 and 32 requests on the small test model")
    p.add_argument("--levels", type=levels_type, default=(1, 8, 32), help="requests at once (default 1,8,32)")
    p.add_argument("--tokens", type=count_type, default=200, help="semantic tokens per request (default 200)")
    p.add_argument("--rounds", type=count_type, default=5, help="timed rounds per level, after a warm-up")
    p.add_argument("--draws", default="graph,host", help="where tokens are drawn: graph, host or both (default both)")
    p.add_argument("--edges", action="store_true",
                   help="also count the draws where the graph and Bark's float64 rule differ on a long run")
    p.add_argument("--size", choices=("tiny", "small", "large"), default="tiny", help="model shapes (default tiny)")
    p.add_argument("--precision", choices=("fp32", "int8", "int4"), default="fp32", help="graphs (default fp32)")
    p.add_argument("--threads", type=threads_type, help="threads (default: all cores)")
    p.add_argument("--cache", type=Path, help="where the random checkpoints and exports are kept (shared with stages)")
    p.add_argument("--out", help="also write the figures as JSON here")
    p.set_defaults(func=cmd_host)

    p = sub.add_parser("first-audio", help="a stream's time to first audio against the whole one-shot request")
    p.add_argument("--size", choices=("tiny", "small", "large"), default="small")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8", "int4"), default="int8")
    p.add_argument("--voices", default="v2/en_speaker_6,none", help="comma-separated presets, 'none' for no voice")
    p.add_argument("--rounds", type=count_type, default=3, help="timed rounds, after a warm-up")
    p.add_argument("--pacing", choices=("first-audio", "free", "both"), default="first-audio",
                   help="the engine's pacing of a stream's semantic run until its first audio")
    p.add_argument("--threads", type=threads_type, help="threads (default: all cores)")
    p.add_argument("--providers", help="ONNX Runtime providers, e.g. cuda,cpu")
    p.add_argument("--cache", type=Path, help="where the random checkpoints and exports are kept (shared with stages)")
    p.add_argument("--out", help="also write the figures as JSON here")
    p.set_defaults(func=cmd_first_audio)

    p = sub.add_parser("int8", help="time the coarse graph's two int8 forms (activations per tensor or per row)")
    p.add_argument("--size", choices=("tiny", "small", "large"), default="small")
    p.add_argument("--threads", type=threads_type, help="threads (default: all cores)")
    p.add_argument("--rounds", type=count_type, default=5, help="alternating timed rounds, after a warm-up")
    p.add_argument("--cache", type=Path, help="where the random checkpoints are kept (shared with stages)")
    p.add_argument("--out", help="also write the figures as JSON here")
    p.set_defaults(func=cmd_int8)

    p = sub.add_parser("footprint", help="MB on disk per graph and peak memory of one 13 s generation")
    p.add_argument("--size", choices=("tiny", "small", "large"), default="small")
    p.add_argument("--precisions", default="int8", help="comma-separated: fp32, fp16, int8, int4 (default int8)")
    p.add_argument("--threads", type=threads_type, help="threads (default: all cores)")
    p.add_argument("--cache", type=Path, help="where the random checkpoints and exports are kept (shared with stages)")
    p.add_argument("--generations", type=count_type, default=1, help="segments generated one after the other")
    p.add_argument("--out", help="also write the figures as JSON here")
    p.set_defaults(func=cmd_footprint)

    p = sub.add_parser("ab", help="two model directories in one process, stage by stage in alternating rounds")
    p.add_argument("model_a", help="model directory A (e.g. the export before a change)")
    p.add_argument("model_b", help="model directory B; the ratios printed are B / A")
    p.add_argument("--stages", default="semantic,coarse,fine,codec", help="comma-separated, of " + ",".join(AB_STAGES))
    p.add_argument("--rounds", type=count_type, default=5, help="alternating timed rounds, after a warm-up")
    p.add_argument("--threads", type=threads_type, help="threads per model (default: all cores)")
    p.add_argument("--providers", help="ONNX Runtime providers, e.g. cuda,cpu")
    p.add_argument("--out", help="also write the figures as JSON here")
    p.set_defaults(func=cmd_ab)

    p = sub.add_parser("compare", help="exit 1 when a stage is slower than in a baseline results.json")
    p.add_argument("baseline", help="results.json (or pytest-benchmark JSON) of the baseline run")
    p.add_argument("current", help="results.json (or pytest-benchmark JSON) of the run to check")
    p.add_argument("--threshold", type=float, default=0.15, help="allowed slowdown of a median (0.15 = 15%%)")
    p.add_argument("--backends", help="only these backends (default: all in both files)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("serve", help="load a speech server at 1x and 2x its max batch (times its replicas), "
                                                 "then a soak")
    p.add_argument("--model", help="start `bark-onnx serve` on this model (127.0.0.1, a free port)")
    p.add_argument("--size", choices=("tiny", "small", "large"),
                   help="or on a random-weight model of these shapes (made and cached as `bench` does)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8", "int4"), default="int8",
                   help="the random-weight model's precision")
    p.add_argument("--url", help="or load a running server, e.g. http://127.0.0.1:8000")
    p.add_argument("--max-batch", type=int, default=8, help="the started server's --max-batch")
    p.add_argument("--max-queue", type=int, default=64, help="the started server's --max-queue")
    p.add_argument("--threads", type=threads_type, help="the started server's --threads")
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


def cmd_bench(args) -> int:
    import importlib.util

    if importlib.util.find_spec("pytest_benchmark") is None:  # the timing engine
        print("bark-onnx: bench needs the bench and export extras: pip install 'bark-onnx[export,bench]'",
              file=sys.stderr)
        return 2
    if args.torch_device == "cuda" and not _torch_sees_cuda():
        print("bark-onnx: --torch-device cuda, but torch sees no CUDA device (torch.cuda.is_available() is False)",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "pytest-benchmark.json"
    code = _run_cases(args, raw)
    if code != 0:
        print(f"bark-onnx: the benchmark run failed (pytest exit {code})", file=sys.stderr)
        _write_partial(raw, out)
        return int(code)
    results = report.summarize(json.loads(raw.read_text()), {"torch_device": args.torch_device})
    _add_roofline(args, results)
    written = _write(out, results)  # the timings are safe before the (slower) precision price
    if not args.no_quality:
        _add_quality(args, results)
        written = _write(out, results)
    print(report.table(results))
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)
    return 0


def _run_cases(args, raw: Path) -> int:
    """pytest-benchmark over test_speed.py: one case per backend and stage."""
    import pytest

    here = Path(__file__).parent
    return pytest.main([
        str(here / "test_speed.py"), "-q", "-p", "no:cacheprovider", f"--rootdir={here}",
        f"--benchmark-json={raw}", "--benchmark-columns=median,iqr,min,max,rounds", "--benchmark-sort=name",
        f"--bench-size={args.size}", f"--bench-backends={args.backends}", f"--bench-stages={args.stages}",
        f"--bench-rounds={args.rounds}", f"--bench-segment-rounds={args.segment_rounds}",
        f"--bench-torch-device={args.torch_device}",
        *([f"--bench-threads={args.threads}"] if args.threads else []),
        *([f"--bench-providers={args.providers}"] if args.providers else []),
        *([f"--bench-cache={args.cache}"] if args.cache else []),
    ])


def _precisions(args) -> list[str]:
    return [b.strip()[len("onnx-"):] for b in args.backends.split(",") if b.strip().startswith("onnx-")]


def _add_roofline(args, results: dict) -> None:
    """The lower bound from this CPU's measured rates: for runs of the ONNX backends on the CPU only."""
    from .prepare import prepare

    if any(name.startswith("onnx-") and (info.get("runs_on") or "CPU").split("+")[0] != "CPU"
           for name, info in results["info"].items()):
        return
    precisions = _precisions(args)
    paths = prepare(args.size, precisions, args.cache, progress=False)
    results["roofline"] = _roofline(paths, precisions, args.threads)


def _add_quality(args, results: dict) -> None:
    """The price of fp16/int8/int4 against fp32 (exported for the purpose if the run has no fp32 backend)."""
    from .prepare import prepare
    from .quality import measure

    priced = [p for p in _precisions(args) if p in ("fp16", "int8", "int4")]
    if not priced:
        return
    paths = prepare(args.size, ["fp32", *priced], args.cache, progress=False)
    providers = provider_names(args.providers)
    results["quality"] = {p: measure(paths["onnx-fp32"], paths[f"onnx-{p}"], providers=providers) for p in priced}


def _write(out: Path, results: dict) -> list[Path]:
    """results.json, results.md and (with matplotlib) chart.png; returns what it wrote."""
    report.write_json(out / "results.json", results)
    write_atomic(out / "results.md", report.table(results))
    written = [out / "results.json", out / "results.md"]
    try:
        report.chart(results, out / "chart.png")
        written.append(out / "chart.png")
    except ModuleNotFoundError as e:  # the chart is the one part that needs matplotlib
        print(f"bark-onnx: no chart ({e.name} is not installed: pip install 'bark-onnx[bench]')", file=sys.stderr)
    return written


def _torch_sees_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _write_partial(raw: Path, out: Path) -> None:
    """After a failed run, the results of the cases that did run (results.json, results.md)."""
    try:
        data = json.loads(raw.read_text())
    except (OSError, ValueError):
        return
    if data.get("benchmarks"):
        _write(out, report.summarize(data, {"partial": True}))
        print(f"bark-onnx: what did run is in {out / 'results.md'}", file=sys.stderr)


def _roofline(paths: dict, precisions: list[str], threads: int | None) -> dict:
    from bark_onnx.runtime.model.config import ModelConfig
    from bark_onnx.runtime.sessions.session import default_threads

    from .roofline import estimate, machine_rates
    from .workload import SEGMENT

    rates = machine_rates(threads or default_threads())
    estimates = {}
    for precision in precisions:
        cfg = ModelConfig.load(paths[f"onnx-{precision}"])
        configs = {"semantic": cfg.semantic, "coarse": cfg.coarse, "fine": cfg.fine}
        estimates[f"onnx-{precision}"] = estimate(configs, cfg.codec, SEGMENT, precision, rates)
    return {"rates": rates, "estimates": estimates}


def cmd_roofline(args) -> int:
    from .call_roofline import run
    from .prepare import prepare

    model = args.model or prepare(args.size, [args.precision], args.cache)[f"onnx-{args.precision}"]
    result = run(Path(model), args.threads, args.rounds)
    if args.out:
        report.write_json(args.out, result)
    return 0


def cmd_fastpath(args) -> int:
    from .fastpath import run

    rows = run(args.size, args.threads)
    if args.out:
        report.write_json(args.out, rows)
    return 0


def cmd_concurrency(args) -> int:
    from .concurrency import run

    batches = {name: value for name, value in (("fine_batch", args.fine_batch), ("codec_batch", args.codec_batch))
               if value is not None}
    run(args.size, [p.strip() for p in args.precisions.split(",") if p.strip()], args.levels, args.tokens,
        args.semantic_tokens, args.threads, Path(args.out) if args.out else None,
        args.cache, provider_names(args.providers), batches)
    return 0


def cmd_serve(args) -> int:
    from .serve_load import TEXT, run

    if args.text is None:
        args.text = TEXT
    return run(args)

def cmd_host(args) -> int:
    from .host_cost import DRAWS, edge_rate, measure, table
    from .prepare import prepare

    draws = tuple(d.strip() for d in args.draws.split(",") if d.strip())
    if not draws or set(draws) - set(DRAWS):
        print("bark-onnx: --draws takes graph and/or host", file=sys.stderr)
        return 2
    model = prepare(args.size, [args.precision], args.cache)[f"onnx-{args.precision}"]
    result = measure(model, args.levels, args.tokens, args.rounds, draws, args.threads)
    print(f"us per row and token, median (range) of {args.rounds} rounds; CPU flags {result['cpu_flags']}")
    print(table(result))
    print(f"a request's tokens alone = among others: {result['same_tokens_alone_and_together']}; "
          f"graph vs host draws agree on {result['graph_vs_host_token_agreement']}")
    if args.edges:
        result["edges"] = edge_rate(model, threads=args.threads)
        edges = result["edges"]
        print(f"graph (float32) vs Bark's float64 rule, same uniform numbers: {edges['differ']} of {edges['draws']} "
              f"draws differ ({edges['rate']:.2e})")
    if args.out:
        report.write_json(args.out, result)
    return 0


def cmd_first_audio(args) -> int:
    from .first_audio import PACINGS, measure, table
    from .prepare import prepare

    voices = tuple(None if v.strip() == "none" else v.strip() for v in args.voices.split(",") if v.strip())
    pacings = tuple(PACINGS) if args.pacing == "both" else (args.pacing,)
    model = prepare(args.size, [args.precision], args.cache)[f"onnx-{args.precision}"]
    result = measure(model, voices, args.rounds, pacings, args.threads, provider_names(args.providers))
    print(f"bark-{args.size} {args.precision}, CPU flags {result['cpu_flags']}, on "
          f"{', '.join(result['providers'])}; seconds, median (range) of {args.rounds} rounds")
    print(table(result))
    if args.out:
        report.write_json(args.out, result)
    return 0


def cmd_int8(args) -> int:
    from .int8_forms import run

    result = run(args.size, args.threads, args.rounds, root=args.cache)
    if args.out:
        report.write_json(args.out, result)
    return 0


def cmd_footprint(args) -> int:
    from .footprint import run

    rows = run(args.size, [p.strip() for p in args.precisions.split(",")], args.cache,
               args.threads, args.generations)
    if args.out:
        report.write_json(args.out, rows)
    return 0


def cmd_ab(args) -> int:
    from .ab import run

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in AB_STAGES]
    if unknown or not stages:
        print(f"bark-onnx: --stages takes some of {','.join(AB_STAGES)}, got {args.stages!r}", file=sys.stderr)
        return 2
    providers = provider_names(args.providers)
    result = run(Path(args.model_a), Path(args.model_b), stages, args.rounds, args.threads, providers)
    if args.out:
        report.write_json(args.out, result)
    return 0


def cmd_compare(args) -> int:
    baseline, current = report.load(Path(args.baseline)), report.load(Path(args.current))
    backends = [b.strip() for b in args.backends.split(",")] if args.backends else None
    failures = report.compare(baseline, current, args.threshold, backends)
    if failures:
        print("slower than the baseline:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print(f"no stage slower than the baseline by more than {args.threshold * 100:.0f} %")
    return 0
