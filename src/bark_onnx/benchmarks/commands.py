"""What each `bark-onnx bench <what>` command does with its parsed arguments (cli.py parses them):
check them where argparse cannot, run the benchmark module, print its table and write its JSON.
Each imports its module only when it runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bark_onnx.runtime.files import write_atomic
from bark_onnx.runtime.sessions.providers import provider_names

from . import report
from .ab import STAGES as AB_STAGES


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
    _add_stage_bound(args, results)
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


def _add_stage_bound(args, results: dict) -> None:
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
