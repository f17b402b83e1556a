"""Weight quantization of a saved fp32 graph.

- int8: every MatMul with a constant weight takes int8 weights and quantizes
  its activations per row at run time (see `int8_matmuls`). Each row of a
  batch is computed on its own, so a request gives the same logits alone or
  batched with others; prefills and one-token steps both run on the CPU's int8
  dot products.
- int4: weight-only `MatMulNBits` (ONNX Runtime's quantizer: 4-bit blocks of
  32, symmetric; accuracy_level 4 lets the CPU compute in int8). Steps stream
  a quarter of the bytes; prefills run at roughly fp32 speed on CPUs without VNNI.

In both, the embedding tables (and the fine model's heads, which slice rows of
its tables) are stored in int8 with a scale per row (see `int8_tables`).
LayerNorms, biases and attention compute in fp32; the weights that stay
floating point are stored in fp16 (see `fp16_storage`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

QUANTIZED = ("int8", "int4")
INT4_BLOCK = 32
MS_DOMAIN = "com.microsoft"  # the domain of ONNX Runtime's contrib ops


def quantize_graph(src: Path, dst: Path, precision: str) -> None:
    """Write a quantized copy of the graph `src` (weights in `<dst>.data`) to `dst`."""
    import onnx

    if precision not in QUANTIZED:
        raise ValueError(f"precision must be one of {QUANTIZED}, got {precision!r}")
    if precision == "int8":
        model = onnx.load(str(src))
        int8_matmuls(model.graph)
    else:
        model = _int4_matmuls(onnx.load(str(src)))
    int8_tables(model.graph)
    fp16_storage(model.graph)  # what stays fp32 (norms, biases, scales): half the bytes on disk
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=dst.name + ".data", size_threshold=1024)


def symmetric_int8(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(q, scale) with w ~ q * scale, q in [-127, 127] and one scale per slice along `axis`
    (keepdims; None: one for all). The scales are fp16 values (stored as such, see
    `fp16_storage`); an all-zero slice gets scale 0 and stays exactly zero."""
    amax = np.abs(w).max(axis=axis, keepdims=True)
    scale = (amax / 127).astype(np.float16).astype(np.float32)
    q = np.clip(np.round(w / np.where(scale > 0, scale, 1)), -127, 127).astype(np.int8)
    return q, scale


class _Edit:
    """Collects the nodes and initializers that replace those of a graph."""

    def __init__(self, graph):
        self.graph = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.consts: dict[tuple, str] = {}
        self.new_inits: list = []

    def array(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None

    def weight(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.new_inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, value, dtype) -> str:
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self.consts:
            self.consts[key] = self.weight(f"/quantize/const_{len(self.consts)}", array)
        return self.consts[key]

    def commit(self, nodes: list, dropped: set[str]) -> None:
        kept = [t for t in self.graph.initializer if t.name not in dropped]
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept + self.new_inits)


def int8_matmuls(graph) -> int:
    """Replace each MatMul of a declared 2-D input by a constant weight with its int8 form.

        x (rows, K) ─Abs─ReduceMax─×1/127─> a (rows, 1): a scale per row
        x, a, 128 ─QuantizeLinear─> uint8 (rows, K)
        ─MatMulIntegerToFloat(int8 W; scales a and W's)─> y (rows, N)

    Integer products are exact, so a row's result depends on that row alone.
    W has one scale, as ONNX Runtime's dynamic quantization gives it (a scale per
    column made its int8 product 13 % slower at one row, 50 % at eight). The input's
    shape comes from the graph's value_info (the graph builder declares the rows
    it feeds to weights); the zero point tensor is made once per symbolic row
    count. Returns how many MatMuls were rewritten.
    """
    from onnx import TensorProto, helper

    edit = _Edit(graph)
    declared = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.value_info}
    zero_points: dict[str, str] = {}
    nodes, dropped = [], set()
    for node in graph.node:
        w = edit.array(node.input[1]) if node.op_type == "MatMul" else None
        rows = declared.get(node.input[0], [])
        if w is None or w.ndim != 2 or w.dtype != np.float32 or len(rows) != 2 or not isinstance(rows[0], str):
            nodes.append(node)
            continue
        x, prefix = node.input[0], node.name or node.output[0]

        def op(op_type: str, inputs: list[str], step: str, **attrs) -> str:
            nodes.append(helper.make_node(op_type, inputs, [f"{prefix}/{step}"], name=f"{prefix}/{step}", **attrs))
            return f"{prefix}/{step}"

        if rows[0] not in zero_points:
            zero_points[rows[0]] = op("ConstantOfShape", [op("Shape", [x], "rows", end=1)], "zero_point",
                                      value=helper.make_tensor("value", TensorProto.UINT8, [1], [128]))
        # A zero row gets scale 0: its quantized values are then arbitrary but finite, and ×0 makes it 0.
        amax = op("ReduceMax", [op("Abs", [x], "abs")], "amax", axes=[1], keepdims=1)  # opset-17 form
        a = op("Mul", [amax, edit.const(1 / 127, np.float32)], "scale")  # (rows, 1)
        xq = op("QuantizeLinear", [x, op("Reshape", [a, edit.const([-1], np.int64)], "scale_flat"),
                                   zero_points[rows[0]]], "quantized", axis=0)
        q, scale = symmetric_int8(w, axis=None)
        wq = edit.weight(f"{node.input[1]}_int8", q)
        ws = edit.weight(f"{node.input[1]}_scale", scale.reshape(()))
        # a (rows, 1) as A's scale: ONNX Runtime scales each output row by it
        nodes.append(helper.make_node("MatMulIntegerToFloat", [xq, wq, a, ws, edit.const(128, np.uint8)],
                                      list(node.output), name=f"{prefix}/int8", domain=MS_DOMAIN))
        dropped.add(node.input[1])
    edit.commit(nodes, dropped)
    return len(dropped)


def _reads_rows(node, table: str, edit: _Edit) -> bool:
    """Whether `node` uses `table` only to read rows of it: Gather or Slice on axis 0."""
    if node.input[0] != table or table in node.input[1:]:
        return False
    if node.op_type == "Gather":
        return all(a.i == 0 for a in node.attribute if a.name == "axis")
    if node.op_type == "Slice" and len(node.input) >= 4:
        axes = edit.array(node.input[3])
        return axes is not None and axes.tolist() in ([0], [-2])
    return False


def int8_tables(graph) -> list[str]:
    """Store each fp32 table read only by row (Gather, Slice on axis 0) in int8 with a scale per row.

        ids ─Gather(int8 table)─Cast─┐
        ids ─Gather(scale (V, 1))────┴─Mul─> rows (fp32)

    Only the rows a node reads are dequantized. Returns the tables' names.
    """
    from onnx import TensorProto, helper

    edit = _Edit(graph)
    names = set()
    for t in graph.initializer:
        users = [n for n in graph.node if t.name in n.input]
        if t.data_type != TensorProto.FLOAT or len(t.dims) != 2 or not users or \
                not all(_reads_rows(n, t.name, edit) for n in users) or not np.isfinite(edit.array(t.name)).all():
            continue  # a table with -inf (the draw's band masks) has no int8 form
        q, scale = symmetric_int8(edit.array(t.name), axis=1)
        edit.weight(f"{t.name}_int8", q)
        edit.weight(f"{t.name}_scale", scale)
        names.add(t.name)
    nodes = []
    for node in graph.node:
        if not node.input or node.input[0] not in names:
            nodes.append(node)
            continue
        table, name, rest = node.input[0], node.name or node.output[0], list(node.input[1:])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        q = helper.make_node(node.op_type, [f"{table}_int8", *rest], [f"{name}/int8"], name=f"{name}/int8", **attrs)
        s = helper.make_node(node.op_type, [f"{table}_scale", *rest], [f"{name}/scale"], name=f"{name}/scale", **attrs)
        cast = helper.make_node("Cast", [q.output[0]], [f"{name}/float"], name=f"{name}/float", to=TensorProto.FLOAT)
        mul = helper.make_node("Mul", [cast.output[0], s.output[0]], list(node.output), name=f"{name}/dequantize")
        nodes += [q, s, cast, mul]
    edit.commit(nodes, names)
    return sorted(names)


def fp16_storage(graph, min_size: int = 1024) -> int:
    """Store the fp32 initializers of at least `min_size` elements in fp16, cast back to fp32 in the
    graph (ONNX Runtime folds the casts when it loads it: half the bytes on disk, the same
    arithmetic). Returns the bytes saved."""
    from onnx import TensorProto, helper

    edit, saved, casts = _Edit(graph), 0, []
    names = set()
    for t in graph.initializer:
        if t.data_type == TensorProto.FLOAT and int(np.prod(t.dims)) >= min_size:
            edit.weight(f"{t.name}_fp16", edit.array(t.name).astype(np.float16))
            casts.append(helper.make_node("Cast", [f"{t.name}_fp16"], [t.name], name=f"/fp16/{t.name}",
                                          to=TensorProto.FLOAT))
            names.add(t.name)
            saved += 2 * int(np.prod(t.dims))
    edit.commit(casts + list(graph.node), names)
    return saved


def _int4_matmuls(model):
    """ONNX Runtime's 4-bit quantizer; recent versions of it need the `onnx-ir` package."""
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer,
        )
    except ImportError as e:
        raise RuntimeError(f"int4 quantization needs {e.name or 'a missing package'}: "
                           "pip install 'bark-onnx[export]' (it brings onnx-ir)") from e
    quiet = logging.getLogger("root")  # the quantizer logs through the root logger
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        config = DefaultWeightOnlyQuantConfig(block_size=INT4_BLOCK, is_symmetric=True, accuracy_level=4, bits=4)
        quantizer = MatMulNBitsQuantizer(model, algo_config=config)
        quantizer.process()
        return quantizer.model.model
    finally:
        quiet.setLevel(level)
