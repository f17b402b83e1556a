"""The EnCodec decoder graph: codes (B, 8, T) int64 -> audio (B, T * 320) float32.

Exported with PyTorch's TorchScript exporter, which turns the convolutions
and the LSTM into standard ONNX ops (Conv, ConvTranspose, LSTM) with dynamic
batch and length.
"""

from __future__ import annotations

import io
import warnings

import onnx
import torch

from bark_onnx.config import GraphInfo

from .encodec import EncodecDecoder

OPSET = 17


def build_codec(decoder: EncodecDecoder) -> tuple[onnx.ModelProto, GraphInfo]:
    decoder = decoder.eval()
    example = torch.zeros(1, decoder.cfg.n_codebooks, 16, dtype=torch.int64)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
        torch.onnx.export(
            decoder, (example,), buf, dynamo=False, opset_version=OPSET,
            input_names=["codes"], output_names=["audio"],
            dynamic_axes={"codes": {0: "batch", 2: "frames"}, "audio": {0: "batch", 1: "samples"}},
        )
    model = onnx.load_model_from_string(buf.getvalue())
    model.producer_name = "bark-onnx"
    model.doc_string = "EnCodec 24 kHz decoder (6 kbps, 8 codebooks)"
    return model, GraphInfo(file="codec.onnx", inputs=("codes",), outputs=("audio",))
