"""A small helper that collects ONNX nodes and weights with readable names."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bark_onnx.kernels.quantize import MS_DOMAIN  # ONNX Runtime's contrib ops; re-exported for the graph builders
OPSET = 17  # every graph of a model directory (ONNX Runtime >= 1.20 reads it)
ONNX_TYPE = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16,
             np.dtype(np.int64): TensorProto.INT64, np.dtype(np.int32): TensorProto.INT32,
             np.dtype(np.bool_): TensorProto.BOOL, np.dtype(np.uint8): TensorProto.UINT8}


class GraphBuilder:
    """Nodes are named by where they sit (`/layers.0/attn/qkv/MatMul`), weights by what they are."""

    def __init__(self, name: str, dtype=np.float32):
        self.name = name
        self.dtype = np.dtype(dtype)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.value_info: dict[str, onnx.ValueInfoProto] = {}
        self._consts: dict[tuple, str] = {}
        self._names: set[str] = set()

    @property
    def float_type(self) -> int:
        return ONNX_TYPE[self.dtype]

    def input(self, name: str, elem_type: int, shape: list) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def output(self, name: str, elem_type: int, shape: list) -> str:
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def declare(self, name: str, shape: list) -> None:
        """Record the shape of an intermediate tensor (of the graph's float type) in the graph."""
        self.value_info.setdefault(name, helper.make_tensor_value_info(name, self.float_type, shape))

    def weight(self, name: str, array: np.ndarray, keep_dtype: bool = False) -> str:
        """A weight initializer; floating point weights take the graph's precision."""
        array = np.asarray(array)
        if array.dtype.kind == "f" and not keep_dtype:
            array = array.astype(self.dtype)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, value, dtype=np.int64) -> str:
        """A small constant, shared between nodes that use the same value."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            name = f"/const/{array.dtype.name}_{len(self._consts)}"
            self.initializers.append(numpy_helper.from_array(array, name))
            self._consts[key] = name
        return self._consts[key]

    def op(self, op_type: str, inputs: list[str], name: str, outputs: int | list[str] = 1,
           domain: str | None = None, **attrs):
        """Add a node; returns its output name (or a list when it has several)."""
        node_name = f"{name}/{op_type}"
        if node_name in self._names:
            raise ValueError(f"duplicate node name {node_name}")
        self._names.add(node_name)
        if isinstance(outputs, int):
            outs = [f"{node_name}_output_{i}" for i in range(outputs)]
        else:
            outs = list(outputs)
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=node_name, domain=domain, **attrs))
        return outs[0] if len(outs) == 1 else outs

    def model(self, opset: int, doc: str = "") -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers,
                                  value_info=list(self.value_info.values()))
        imports = [helper.make_opsetid("", opset)]
        if any(n.domain == MS_DOMAIN for n in self.nodes):
            imports.append(helper.make_opsetid(MS_DOMAIN, 1))
        model = helper.make_model(graph, opset_imports=imports, producer_name="bark-onnx", doc_string=doc)
        model.ir_version = min(model.ir_version, 10)  # readable by ONNX Runtime >= 1.20
        return model
