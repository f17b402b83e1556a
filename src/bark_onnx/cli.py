"""The `bark-onnx` command.

    say, voices         the runtime (runtime/commands.py)
    export, demo        the export extra: torch is imported only when they run (export/cli.py)
    serve               the serve extra: FastAPI is imported only when it runs (server/command.py)
    bench <what>        the benchmarks, with a parser of their own (benchmarks/cli.py), imported only
                        when asked for: the runtime never imports the benchmarks

say and serve without --model export the default model on first use: this layer, which sees
both the runtime and export, hands them the exporter (first_use.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .first_use import export_on_first_use
from .runtime.commands import Parser
from .runtime.errors import BarkOnnxError

EXPORT_HINT = "this subcommand needs the export extra: pip install 'bark-onnx[export]' (torch==2.13.0 first on CPU)"
BENCH = "bench"


def _with_export_extra(run):
    """A subcommand that needs torch and onnx: without them, say which extra to install."""
    def call(args) -> int:
        try:
            return run(args)
        except ImportError as err:  # torch, onnx or transformers missing
            raise BarkOnnxError(f"{EXPORT_HINT} ({err})") from None
    return call


def build_parser() -> argparse.ArgumentParser:
    from .export.cli import add_arguments, add_demo_arguments, run, run_demo_command  # argparse only: no torch
    from .runtime import commands
    from .server.command import add_parser as add_serve_parser  # argparse only: no FastAPI

    parser = Parser(prog="bark-onnx", description="Suno's Bark text-to-audio on ONNX Runtime")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (providers, timings)")
    sub = parser.add_subparsers(dest="command", required=True)
    commands.add_parsers(sub, export_on_first_use)
    p = sub.add_parser("export", help="export a Bark checkpoint to an ONNX model directory")
    add_arguments(p)
    p.set_defaults(func=_with_export_extra(run))
    p = sub.add_parser("demo", help="offline check: a random-weight model of Bark's real shapes, timed per stage")
    add_demo_arguments(p)
    p.set_defaults(func=_with_export_extra(run_demo_command))
    add_serve_parser(sub, export_on_first_use)
    sub.add_parser(BENCH, help="benchmarks against the PyTorch reference and transformers "
                               "('bark-onnx bench --help' lists them; the bench extra)", add_help=False)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), len(argv))
    parser = build_parser()
    args = parser.parse_args(argv[: command + 1] if argv[command:command + 1] == [BENCH] else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == BENCH:
        def run(_args) -> int:
            from .benchmarks.cli import main as bench_main

            return bench_main(argv[command + 1:])
    else:
        run = args.func
    try:
        return int(run(args) or 0)
    except BarkOnnxError as err:
        message = " ".join(str(err).splitlines())  # one line, whatever the message holds
        print(f"bark-onnx: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _quiet_stdout()
        print("bark-onnx: error: the output pipe was closed; stopped", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bark-onnx: interrupted", file=sys.stderr)
        return 130


def _quiet_stdout() -> None:
    """After EPIPE on stdout, point it at /dev/null: Python flushes stdout at exit, and a second
    BrokenPipeError there would print a traceback (the advice in Python's `signal` documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (e.g. captured in tests)
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
