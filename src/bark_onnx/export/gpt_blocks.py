"""The transformer blocks of Bark's GPTs as ONNX nodes, shared by the causal graphs (gpt_graphs.py)
and the fine graph (fine_graph.py), and the checkpoint's weights they are made of.

Between attentions the activations are rows, (B * S, D), and every weight MatMul's input is
declared 2-D in the graph, the form the int8 quantizer (kernels/quantize.py) rewrites.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bark_onnx.runtime.model.config import GPTConfig

from .onnx_builder import MS_DOMAIN, GraphBuilder

INT64_MAX = np.iinfo(np.int64).max


@dataclass
class LayerWeights:
    ln1_w: np.ndarray
    ln1_b: np.ndarray | None
    qkv_w: np.ndarray  # (D, 3D), MatMul layout
    qkv_b: np.ndarray | None
    proj_w: np.ndarray  # (D, D)
    proj_b: np.ndarray | None
    ln2_w: np.ndarray
    ln2_b: np.ndarray | None
    fc_w: np.ndarray  # (D, 4D)
    fc_b: np.ndarray | None
    out_w: np.ndarray  # (4D, D)
    out_b: np.ndarray | None


def weight_array(state: dict, key: str, required: bool = True) -> np.ndarray | None:
    if key not in state:
        if required:
            raise KeyError(key)
        return None
    return state[key].detach().to("cpu").float().numpy()


def layer_weights(state: dict, i: int) -> LayerWeights:
    p = f"transformer.h.{i}."
    t = lambda key: weight_array(state, p + key).T  # noqa: E731  Linear (out, in) -> MatMul (in, out)
    b = lambda key: weight_array(state, p + key, required=False)  # noqa: E731
    return LayerWeights(
        ln1_w=weight_array(state, p + "ln_1.weight"), ln1_b=b("ln_1.bias"),
        qkv_w=t("attn.c_attn.weight"), qkv_b=b("attn.c_attn.bias"),
        proj_w=t("attn.c_proj.weight"), proj_b=b("attn.c_proj.bias"),
        ln2_w=weight_array(state, p + "ln_2.weight"), ln2_b=b("ln_2.bias"),
        fc_w=t("mlp.c_fc.weight"), fc_b=b("mlp.c_fc.bias"),
        out_w=t("mlp.c_proj.weight"), out_b=b("mlp.c_proj.bias"),
    )


class Blocks:
    """Emits transformer blocks; `fused` picks ORT contrib ops or standard ops.

    The blocks work on rows: (B * S, D), one per position of every sequence, so
    that each weight product is a plain 2-D MatMul (what the int8 quantizer
    expects, see kernels/quantize.py); attention sees (B, S, ...) and gives rows
    back. `lead` is the 1-D int64 tensor [B, S], or None where S is 1 (a step-only
    graph, whose shapes stay constants so that no shape is computed on the host).
    """

    def __init__(self, g: GraphBuilder, cfg: GPTConfig, fused: bool, lead: str | None, skip_norm: bool | None = None):
        self.g, self.cfg, self.fused, self.lead = g, cfg, fused, lead
        # residual LayerNorms as SkipLayerNormalization: by default in fused fp16 graphs (see residual_norm)
        self.skip_norm = fused and g.dtype == np.float16 if skip_norm is None else skip_norm
        self.rows = "rows"  # the symbolic row count of the activations (B * S; B after the last-position cut)
        self._shapes: dict[tuple, str] = {}

    def lead_shape(self, *tail: int) -> str:
        """The shape [B, S, *tail] (made once per tail)."""
        if not tail and self.lead is not None:
            return self.lead
        if self.lead is None:
            return self.g.const([-1, 1, *tail])
        if tail not in self._shapes:
            self._shapes[tail] = self.g.op("Concat", [self.lead, self.g.const(list(tail))],
                                           f"/shape/lead_{len(self._shapes)}", axis=0)
        return self._shapes[tail]

    def to_rows(self, t: str, n: int, name: str) -> str:  # (B, S, n) -> (B * S, n)
        return self.g.op("Reshape", [t, self.g.const([-1, n])], name)

    def matmul(self, x: str, w: np.ndarray, name: str, weight_name: str, out: str | None = None) -> str:
        """x (rows, K) @ w; x's 2-D shape is declared for the quantizer. `out` names the result."""
        self.g.declare(x, [self.rows, w.shape[0]])
        return self.g.op("MatMul", [x, self.g.weight(weight_name, w)], name, outputs=[out] if out else 1)

    def linear(self, x: str, w: np.ndarray, b: np.ndarray | None, name: str, add_bias: bool = True) -> str:
        y = self.matmul(x, w, name, f"{name[1:]}.weight")
        if b is not None and add_bias:
            y = self.g.op("Add", [y, self.g.weight(f"{name[1:]}.bias", b)], f"{name}/bias")
        return y

    def layer_norm(self, x: str, w: np.ndarray, b: np.ndarray | None, name: str) -> str:
        ins = [x, self.g.weight(f"{name[1:]}.weight", w)]
        if b is not None:
            ins.append(self.g.weight(f"{name[1:]}.bias", b))
        return self.g.op("LayerNormalization", ins, name, axis=-1, epsilon=1e-5)

    def residual_norm(self, delta: str, delta_bias, bias_name: str, x: str, w, b, name: str) -> tuple[str, str]:
        """x' = x + delta (+ bias); returns (LayerNorm(x'), x').

            skip_norm: delta, x ──SkipLayerNormalization──> LN(x'), x'
            otherwise: delta ─(+bias)─Add(x)─> x' ─LayerNormalization─> LN(x')

        The fused op saves a kernel launch on CUDA, where fp16 graphs run. ONNX Runtime's
        CPU kernel of it is slower than the two standard ops (`bark-onnx bench fastpath` times
        the coarse graph both ways: 10 % of its fp32 window prefill), so the fp32 graphs, and
        the int8 and int4 ones made from them, keep the standard ops.
        """
        g = self.g
        if self.skip_norm:
            ins = [delta, x, g.weight(f"{name[1:]}.weight", w),
                   g.weight(f"{name[1:]}.bias", b) if b is not None else "",
                   g.weight(bias_name, delta_bias) if delta_bias is not None else ""]
            while ins[-1] == "":
                ins.pop()
            outs = [f"{name}/normed", "", "", f"{name}/residual"]  # mean and inv_std unused
            g.op("SkipLayerNormalization", ins, name, outputs=outs, domain=MS_DOMAIN, epsilon=1e-5)
            return outs[0], outs[3]
        if delta_bias is not None:
            delta = g.op("Add", [delta, g.weight(bias_name, delta_bias)], f"{name}/delta_bias")
        x = g.op("Add", [x, delta], f"{name}/residual")
        return self.layer_norm(x, w, b, name), x

    def mlp(self, h: str, lw: LayerWeights, name: str) -> str:
        """MatMul -> GELU (exact) -> MatMul; the output bias is left to the next residual add."""
        g = self.g
        fc = self.linear(h, lw.fc_w, lw.fc_b, f"{name}/fc", add_bias=not self.fused)
        if self.fused and lw.fc_b is not None:
            act = g.op("BiasGelu", [fc, g.weight(f"{name[1:]}/fc.bias", lw.fc_b)], f"{name}/act", domain=MS_DOMAIN)
        elif self.fused:
            act = g.op("Gelu", [fc], f"{name}/act", domain=MS_DOMAIN)
        else:  # 0.5 * x * (1 + erf(x / sqrt(2)))
            f = lambda v: g.const(v, g.dtype)  # noqa: E731
            e = g.op("Erf", [g.op("Mul", [fc, f(1 / math.sqrt(2))], f"{name}/act/scale")], f"{name}/act")
            act = g.op("Mul", [g.op("Mul", [fc, f(0.5)], f"{name}/act/half"),
                               g.op("Add", [e, f(1.0)], f"{name}/act/one")], f"{name}/act/gelu")
        return self.matmul(act, lw.out_w, f"{name}/out", f"{name[1:]}/out.weight")

    def split_heads(self, t: str, name: str) -> str:  # (B, S, D) -> (B, nh, S, hs)
        g = self.g
        r = g.op("Reshape", [t, g.const([0, 0, self.cfg.n_head, self.cfg.head_dim])], f"{name}/reshape")
        return g.op("Transpose", [r], f"{name}/transpose", perm=[0, 2, 1, 3])

    def plain_attention(self, qkv: str, name: str, past: tuple[str, str] | None, mask: str | None):
        """Standard-op attention; with `past`, returns the concatenated cache too.

            qkv ─Split─> q, k, v ─heads─> k' = Concat(past_k, k), v' likewise
            softmax((q @ k'^T) * scale, masked) @ v' ─merge heads─> y
        """
        g, D = self.g, self.cfg.n_embd
        q, k, v = g.op("Split", [qkv, g.const([D, D, D])], f"{name}/split", outputs=3, axis=2)
        q, k, v = (self.split_heads(t, f"{name}/{n}") for t, n in ((q, "q"), (k, "k"), (v, "v")))
        present = None
        if past is not None:
            k = g.op("Concat", [past[0], k], f"{name}/k_cache", axis=2)
            v = g.op("Concat", [past[1], v], f"{name}/v_cache", axis=2)
            present = (k, v)
        kt = g.op("Transpose", [k], f"{name}/k_t", perm=[0, 1, 3, 2])
        scores = g.op("MatMul", [q, kt], f"{name}/scores")
        scores = g.op("Mul", [scores, g.const(1 / math.sqrt(self.cfg.head_dim), g.dtype)], f"{name}/scale")
        if mask is not None:
            scores = g.op("Where", [mask, scores, g.const(np.finfo(g.dtype).min, g.dtype)], f"{name}/mask")
        probs = g.op("Softmax", [scores], f"{name}/softmax", axis=-1)
        y = g.op("MatMul", [probs, v], f"{name}/context")
        y = g.op("Transpose", [y], f"{name}/merge", perm=[0, 2, 1, 3])
        y = g.op("Reshape", [y, g.const([0, 0, D])], f"{name}/merge_reshape")
        return y, present

    def stack(self, x: str, layers: list[LayerWeights], attention, final_norm, last_only: bool) -> str:
        """Every block, then the final LayerNorm; returns the normed hidden state.

        x: rows (B * S, D). `attention(qkv, i)` takes the packed (B, S, 3D) qkv of layer
        i and returns its attention output (before c_proj), (B, S, D). With
        `last_only`, the last block keeps only the last position once its keys and
        values are in the cache: its projection and MLP feed nothing but the head,
        so they run on one row per sequence.
        """
        g, D = self.g, self.cfg.n_embd

        def cut(t: str, n: str) -> str:  # (B, S, D) -> (B, D): the last position of each sequence
            t = g.op("Slice", [t, g.const([-1]), g.const([INT64_MAX]), g.const([1])], f"/last/{n}")
            return self.to_rows(t, D, f"/last/{n}/rows")

        h = self.layer_norm(x, layers[0].ln1_w, layers[0].ln1_b, "/layers.0/ln_1")
        for i, lw in enumerate(layers):
            name = f"/layers.{i}"
            qkv = self.linear(h, lw.qkv_w, lw.qkv_b, f"{name}/attn/qkv")
            y = attention(g.op("Reshape", [qkv, self.lead_shape(3 * D)], f"{name}/attn/sequences"), i)
            if last_only and i == len(layers) - 1:
                x = g.op("Reshape", [x, self.lead_shape(D)], "/last/residual/sequences")
                y, x = cut(y, "attn"), cut(x, "residual")
                self.rows = "batch"
            else:
                y = self.to_rows(y, D, f"{name}/attn/rows")
            a = self.matmul(y, lw.proj_w, f"{name}/attn/proj", f"{name[1:]}/attn/proj.weight")
            h, x = self.residual_norm(a, lw.proj_b, f"{name[1:]}/attn/proj.bias", x, lw.ln2_w, lw.ln2_b, f"{name}/ln_2")
            m = self.mlp(h, lw, f"{name}/mlp")
            if i + 1 < len(layers):
                nxt = layers[i + 1]
                h, x = self.residual_norm(m, lw.out_b, f"{name[1:]}/mlp/out.bias", x, nxt.ln1_w, nxt.ln1_b,
                                          f"/layers.{i + 1}/ln_1")
        last = f"layers.{len(layers) - 1}/mlp/out.bias"
        h, _ = self.residual_norm(m, layers[-1].out_b, last, x, final_norm[0], final_norm[1], "/ln_f")
        return h


def shape_dim(g: GraphBuilder, t: str, axis: int, name: str) -> str:
    """Scalar int64 size of axis `axis` of t."""
    s = g.op("Shape", [t], name, start=axis, end=axis + 1)
    return g.op("Squeeze", [s, g.const([0])], f"{name}/scalar")
