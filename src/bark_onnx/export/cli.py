"""`bark-onnx export`: arguments and entry point (loaded only when the subcommand runs)."""

from __future__ import annotations

import argparse

from bark_onnx.config import KV_LAYOUTS, PRECISIONS


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
