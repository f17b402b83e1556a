"""`bark-onnx bench` and `bark-onnx bench-compare`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .workload import ALL_BACKENDS


def add_parsers(sub) -> None:
    p = sub.add_parser("bench", help="time every stage against the PyTorch reference and transformers")
    p.add_argument("--size", choices=("tiny", "small", "large"), default="small",
                   help="transformer shapes: tiny (a smoke test), small (bark-small), large (bark)")
    p.add_argument("--backends", default=ALL_BACKENDS, help=f"comma-separated (default {ALL_BACKENDS})")
    p.add_argument("--stages", default="semantic,coarse,fine,codec,segment,first_audio,semantic_b1,semantic_b8",
                   help="first_audio (streaming) and semantic_b1/_b8 (batching) run on ONNX backends only")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per stage, after a warm-up")
    p.add_argument("--segment-rounds", type=int, default=2, help="timed rounds of the whole segment")
    p.add_argument("--threads", type=int, help="threads per backend (default: all cores)")
    p.add_argument("--providers", help="ONNX Runtime providers for the onnx backends, e.g. cuda,cpu")
    p.add_argument("--out", default="bench-results", help="folder for results.json, results.md, chart.png")
    p.add_argument("--cache", help="where the random checkpoints and exports are kept")
    p.add_argument("--no-quality", action="store_true", help="skip the quantization-price measurement")
    p.add_argument("--slowdown", type=float, default=1.0, help=argparse.SUPPRESS)  # regression-check tests
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("bench-fastpath", help="time the coarse window prefill and step of each fast-path variant")
    p.add_argument("--size", choices=("tiny", "small", "large"), default="small")
    p.add_argument("--threads", type=int, help="threads (default: all cores)")
    p.add_argument("--out", help="also write the rows as JSON here")
    p.set_defaults(func=cmd_fastpath)

    p = sub.add_parser("bench-int8", help="time the coarse graph's two int8 forms (activations per tensor or per row)")
    p.add_argument("--size", choices=("tiny", "small", "large"), default="small")
    p.add_argument("--threads", type=int, help="threads (default: all cores)")
    p.add_argument("--rounds", type=int, default=5, help="alternating timed rounds, after a warm-up")
    p.add_argument("--out", help="also write the figures as JSON here")
    p.set_defaults(func=cmd_int8)

    p = sub.add_parser("bench-footprint", help="MB on disk per graph and peak memory of one 13 s generation")
    p.add_argument("--size", choices=("tiny", "small", "large"), default="small")
    p.add_argument("--precisions", default="int8", help="comma-separated: fp32, fp16, int8, int4 (default int8)")
    p.add_argument("--threads", type=int, help="threads (default: all cores)")
    p.add_argument("--cache", help="where the random checkpoints and exports are kept (shared with bench)")
    p.add_argument("--generations", type=int, default=1, help="segments generated one after the other")
    p.add_argument("--out", help="also write the figures as JSON here")
    p.set_defaults(func=cmd_footprint)

    p = sub.add_parser("bench-compare", help="exit 1 when a stage is slower than in a baseline results.json")
    p.add_argument("baseline", help="results.json (or pytest-benchmark JSON) of the baseline run")
    p.add_argument("current", help="results.json (or pytest-benchmark JSON) of the run to check")
    p.add_argument("--threshold", type=float, default=0.15, help="allowed slowdown of a median (0.15 = 15%%)")
    p.add_argument("--backends", help="only these backends (default: all in both files)")
    p.set_defaults(func=cmd_compare)


def cmd_bench(args) -> int:
    import importlib.util

    if importlib.util.find_spec("pytest_benchmark") is None:  # the timing engine
        print("bark-onnx: bench needs the bench and export extras: pip install 'bark-onnx[export,bench]'",
              file=sys.stderr)
        return 2
    import pytest

    from . import report
    from .prepare import prepare

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "pytest-benchmark.json"
    here = Path(__file__).parent
    code = pytest.main([
        str(here / "test_speed.py"), "-q", "-p", "no:cacheprovider", f"--rootdir={here}",
        f"--benchmark-json={raw}", "--benchmark-columns=median,iqr,min,max,rounds", "--benchmark-sort=name",
        f"--bench-size={args.size}", f"--bench-backends={args.backends}", f"--bench-stages={args.stages}",
        f"--bench-rounds={args.rounds}", f"--bench-segment-rounds={args.segment_rounds}",
        f"--bench-slowdown={args.slowdown}",
        *([f"--bench-threads={args.threads}"] if args.threads else []),
        *([f"--bench-providers={args.providers}"] if args.providers else []),
        *([f"--bench-cache={args.cache}"] if args.cache else []),
    ])
    if code != 0:
        print(f"bark-onnx: the benchmark run failed (pytest exit {code})", file=sys.stderr)
        return int(code)
    results = report.summarize(json.loads(raw.read_text()))
    backends = [b.strip() for b in args.backends.split(",")]
    precisions = [b[len("onnx-"):] for b in backends if b.startswith("onnx-")]
    paths = prepare(args.size, precisions, Path(args.cache) if args.cache else None, progress=False)
    results["roofline"] = _roofline(paths, precisions, args.threads)
    if not args.no_quality and "fp32" in precisions:
        from .quality import measure

        results["quality"] = {p: measure(paths["onnx-fp32"], paths[f"onnx-{p}"])
                              for p in precisions if p in ("int8", "int4")}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    text = report.table(results)
    (out / "results.md").write_text(text)
    written = [out / "results.json", out / "results.md"]
    try:
        report.chart(results, out / "chart.png")
        written.append(out / "chart.png")
    except ModuleNotFoundError as e:  # the chart is the one part that needs matplotlib
        print(f"bark-onnx: no chart ({e.name} is not installed: pip install 'bark-onnx[bench]')", file=sys.stderr)
    print(text)
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)
    return 0


def _roofline(paths: dict, precisions: list[str], threads: int | None) -> dict:
    from bark_onnx.config import ModelConfig
    from bark_onnx.sessions import default_threads

    from .roofline import estimate, machine_rates
    from .workload import SEGMENT

    rates = machine_rates(threads or default_threads())
    estimates = {}
    for precision in precisions:
        cfg = ModelConfig.load(paths[f"onnx-{precision}"])
        configs = {"semantic": cfg.semantic, "coarse": cfg.coarse, "fine": cfg.fine}
        estimates[f"onnx-{precision}"] = estimate(configs, cfg.codec, SEGMENT, precision, rates)
    return {"rates": rates, "estimates": estimates}


def cmd_fastpath(args) -> int:
    from .fastpath import run

    rows = run(args.size, args.threads)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


def cmd_int8(args) -> int:
    from .int8_forms import run

    result = run(args.size, args.threads, args.rounds)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


def cmd_footprint(args) -> int:
    from .footprint import run

    if args.generations < 1:
        print("bark-onnx: --generations must be at least 1", file=sys.stderr)
        return 2
    rows = run(args.size, [p.strip() for p in args.precisions.split(",")], Path(args.cache) if args.cache else None,
               args.threads, args.generations)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


def cmd_compare(args) -> int:
    from . import report

    baseline, current = report.load(Path(args.baseline)), report.load(Path(args.current))
    backends = [b.strip() for b in args.backends.split(",")] if args.backends else None
    failures = report.compare(baseline, current, args.threshold, backends)
    if failures:
        print("slower than the baseline:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print(f"no stage slower than the baseline by more than {args.threshold * 100:.0f} %")
    return 0
