"""Weight quantization of a saved fp32 graph, with ONNX Runtime's quantizers.

- int8: dynamic quantization of every MatMul with a constant weight
  (`DynamicQuantizeMatMul`: int8 weights, activations quantized per call).
  Prefills and one-token steps both get faster on CPU.
- int4: weight-only `MatMulNBits` (4-bit blocks of 32, symmetric;
  accuracy_level 4 lets the CPU compute in int8). Steps stream a quarter of
  the bytes; prefills run at roughly fp32 speed on CPUs without VNNI.

Embeddings (Gather) and everything else stay fp32.
"""

from __future__ import annotations

import logging
from pathlib import Path

QUANTIZED = ("int8", "int4")
INT4_BLOCK = 32


def quantize_graph(src: Path, dst: Path, precision: str) -> None:
    """Write a quantized copy of the graph `src` (weights in `<dst>.data`) to `dst`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if precision not in QUANTIZED:
        raise ValueError(f"precision must be one of {QUANTIZED}, got {precision!r}")
    quiet = logging.getLogger("root")  # the quantizers log through the root logger
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        if precision == "int8":
            quantize_dynamic(
                str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                use_external_data_format=True,
                # Weights must be constants; the contrib ops defeat shape inference, so say the type.
                extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
            )
            _single_data_file(dst)
        else:
            MatMulNBitsQuantizer, DefaultWeightOnlyQuantConfig = _int4_quantizer()
            model = onnx.load(str(src))
            config = DefaultWeightOnlyQuantConfig(block_size=INT4_BLOCK, is_symmetric=True, accuracy_level=4, bits=4)
            quantizer = MatMulNBitsQuantizer(model, algo_config=config)
            quantizer.process()
            onnx.save_model(quantizer.model.model, str(dst), save_as_external_data=True,
                            all_tensors_to_one_file=True, location=dst.name + ".data", size_threshold=1024)
    finally:
        quiet.setLevel(level)


def _int4_quantizer():
    """ONNX Runtime's 4-bit quantizer; recent versions of it need the `onnx-ir` package."""
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer,
        )
    except ImportError as e:
        raise RuntimeError(f"int4 quantization needs {e.name or 'a missing package'}: "
                           "pip install 'bark-onnx[export]' (it brings onnx-ir)") from e
    return MatMulNBitsQuantizer, DefaultWeightOnlyQuantConfig


def _single_data_file(path: Path) -> None:
    """quantize_dynamic names its data file itself; rewrite it as `<name>.data` beside the graph."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    stale = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    if stale <= {path.name + ".data"}:
        return
    model = onnx.load(str(path))
    for name in stale:
        (path.parent / name).unlink(missing_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)
