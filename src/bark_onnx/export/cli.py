"""`bark-onnx export` and `bark-onnx demo`: arguments (argparse only: no torch) and entry points."""

from __future__ import annotations

import argparse

from bark_onnx.runtime.audio import GrowingWav
from bark_onnx.runtime.commands import add_runtime_options, seconds_type
from bark_onnx.runtime.model.config import KV_LAYOUTS, PRECISIONS
from bark_onnx.runtime.sessions.providers import provider_names


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="Suno .pt directory or file, Hugging Face Bark directory or file, or a hub id "
                        "such as suno/bark-small")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (default, CPU), fp16 (GPU), int8 / int4 (quantized weights, CPU)")
    p.add_argument("--kv-cache", choices=KV_LAYOUTS, default="inplace",
                   help="inplace: fused ONNX Runtime ops and a KV buffer updated in place (default); "
                        "concat: standard ONNX ops only (TensorRT and other runtimes)")
    p.add_argument("--validate", action="store_true", help="compare every graph with PyTorch and print the errors")
    p.add_argument("--codec", help="EnCodec 24 kHz checkpoint (encodec_24khz-*.th, an HF directory or hub id)")
    p.add_argument("--tokenizer", help="vocab.txt or tokenizer.json of bert-base-multilingual-cased")
    p.add_argument("--small", action="store_true", help="with both Suno sets in one directory, take the small one")
    p.add_argument("--force", action="store_true", help="replace an existing model directory")


def run(args: argparse.Namespace) -> int:
    from .exporter import export_model

    export_model(
        args.checkpoint, args.out, precision=args.precision, kv_cache=args.kv_cache, validate=args.validate,
        codec=args.codec, tokenizer=args.tokenizer, small=args.small or None, overwrite=args.force,
        progress=not getattr(args, "silent", False),
    )
    return 0


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", choices=("small", "large", "tiny"), default="small",
                   help="bark-small or bark shapes (tiny: a 2-layer model, for a quick install check)")
    p.add_argument("--precision", choices=PRECISIONS, help="graphs to build (default: fp16 where CUDA runs, else int8)")
    p.add_argument("--seconds", type=seconds_type, default=13.0, help="audio length to generate (EOS off)")
    p.add_argument("--out", help="also write the (noise) WAV here")
    p.add_argument("--silent", action="store_true", help="no progress bars")
    add_runtime_options(p)


def run_demo_command(args: argparse.Namespace) -> int:
    if args.out:
        GrowingWav(args.out).discard()  # a bad --out fails now, not after the export and generation
    from bark_onnx.runtime.sessions.session import machine_precision

    from .demo import run_demo

    providers = provider_names(args.providers)
    return run_demo(size=args.size, precision=args.precision or machine_precision(providers), seconds=args.seconds,
                    out=args.out, providers=providers, threads=args.threads, silent=args.silent)
