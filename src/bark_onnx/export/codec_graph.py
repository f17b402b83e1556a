"""The EnCodec decoder graph: codes (B, 8, T) int64 -> audio (B, T * 320) float32.

Exported with PyTorch's TorchScript exporter, which turns the convolutions
and the LSTM into standard ONNX ops (Conv, ConvTranspose, LSTM) with dynamic
batch and length. One rewrite follows: each transposed convolution's right
trim (a Slice copying the largest tensors of the graph) becomes the
ConvTranspose's own end padding, so the trimmed samples are never written.
"""

from __future__ import annotations

import io
import warnings

import onnx
import torch
from onnx import numpy_helper

from bark_onnx.runtime.model.config import GraphInfo

from .encodec import CausalConvTranspose1d, EncodecDecoder
from .onnx_builder import OPSET



def build_codec(decoder: EncodecDecoder, fold_trims: bool = True) -> tuple[onnx.ModelProto, GraphInfo]:
    """fold_trims: let each ConvTranspose trim its own end (CPU graphs). GPU graphs keep the Slice:
    CUDA's ConvTranspose takes symmetric pads only, and with [0, trim] ONNX Runtime runs it on the CPU."""
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
    if fold_trims:
        trims = [m.trim for m in decoder.modules() if isinstance(m, CausalConvTranspose1d)]
        fold_transposed_trims(model.graph, trims)
    model.producer_name = "bark-onnx"
    model.doc_string = "EnCodec 24 kHz decoder (6 kbps, 8 codebooks)"
    return model, GraphInfo(file="codec.onnx", inputs=("codes",), outputs=("audio",))


def fold_transposed_trims(graph: onnx.GraphProto, trims: list[int]) -> None:
    """ConvTranspose -> Slice(x, 0, len - trim, axis -1) becomes ConvTranspose(pads=[0, trim]).

    `trims` are the decoder's trims in graph order; a graph whose transposed
    convolutions are not each followed by such a Slice is an exporter change
    this code does not know, and raises.
    """
    constants = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                 if n.op_type == "Constant" and n.attribute[0].name == "value"}
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    convs = [n for n in graph.node if n.op_type == "ConvTranspose"]
    if len(convs) != len(trims):
        raise RuntimeError(f"codec graph has {len(convs)} ConvTranspose nodes, expected {len(trims)}")
    for conv, trim in zip(convs, trims):
        trim_slice = _only_slice_of(conv.output[0], users, constants)
        if trim_slice is None:
            raise RuntimeError(f"unexpected trim after {conv.name} in the exported codec graph")
        kept = [a for a in conv.attribute if a.name != "pads"]
        del conv.attribute[:]
        conv.attribute.extend(kept + [onnx.helper.make_attribute("pads", [0, trim])])
        conv.output[0] = trim_slice.output[0]
        graph.node.remove(trim_slice)
    _drop_unused(graph)


def _only_slice_of(name: str, users: dict, constants: dict) -> onnx.NodeProto | None:
    """The one Slice(name, start 0, axis -1, step 1) reading `name`, else None."""
    slices = [n for n in users.get(name, []) if n.op_type == "Slice" and n.input[0] == name]
    if len(slices) != 1 or len(slices[0].input) != 5:
        return None
    start, axes, steps = (constants.get(slices[0].input[i]) for i in (1, 3, 4))
    if start is None or axes is None or steps is None:
        return None
    if list(start) == [0] and list(axes) in ([2], [-1]) and list(steps) == [1]:
        return slices[0]
    return None


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Remove nodes whose outputs nothing reads (the Shape arithmetic of the folded slices)."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            keep.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(keep))
