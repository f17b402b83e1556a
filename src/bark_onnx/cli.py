"""The `bark-onnx` command.

Subcommands that need torch (`export`, `demo`) or FastAPI (`serve`) import it
only when they run, so `say` and `voices` work on a runtime-only install.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .errors import BarkOnnxError

EXPORT_HINT = "this subcommand needs the export extra: pip install 'bark-onnx[export]' (torch==2.13.0 first on CPU)"


def _export_parser(sub) -> None:
    from bark_onnx.export.cli import add_arguments  # argparse only: no torch

    p = sub.add_parser("export", help="export a Bark checkpoint to an ONNX model directory")
    add_arguments(p)
    p.set_defaults(func=_run_export)


def _run_export(args) -> int:
    from bark_onnx.export.cli import run

    try:
        return run(args)
    except ImportError as err:  # torch, onnx or transformers missing
        print(f"bark-onnx: {EXPORT_HINT} ({err})", file=sys.stderr)
        return 2


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr and exit status 2 (subcommand parsers share this class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bark-onnx", description="Suno's Bark text-to-audio on ONNX Runtime")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (providers, timings)")
    sub = parser.add_subparsers(dest="command", required=True)
    _export_parser(sub)
    from . import cli_runtime
    from .server.command import add_parser as add_serve_parser  # argparse only: no FastAPI
    from bark_onnx.benchmarks.cli import add_parsers as add_bench_parsers  # argparse only: no torch, no pytest

    cli_runtime.add_parsers(sub)
    add_serve_parser(sub)
    add_bench_parsers(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
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
