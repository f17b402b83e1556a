"""The fine model's ONNX graph: non-causal, no cache, the codebook to predict an input, so one
graph serves every codebook (its blocks come from gpt_blocks.py).

Its attention is ONNX Runtime's `MultiHeadAttention` where the causal graphs use fused ops (one
(B, nh, T, T) buffer instead of two), standard ops otherwise; every position's token is drawn
in the graph (sampling_head.py).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from bark_onnx.runtime.model.config import GPTConfig, GraphInfo

from .gpt_blocks import Blocks, layer_weights, shape_dim, weight_array
from .onnx_builder import MS_DOMAIN, OPSET, GraphBuilder
from .sampling_head import draw_head, float_logits_over_temperature, hidden_over_temperature


def build_fine(cfg: GPTConfig, state: dict, n_logits: int, fused: bool = True,
               dtype=np.float32) -> tuple[onnx.ModelProto, GraphInfo]:
    """The fine graph: codes (B, T, 8), pred_idx -> logits (B, T, n_logits) of codebook pred_idx (over
    the temperature), and tokens (B, T) drawn from them at each window's temperature with a uniform
    number per position.

        codes ─+offsets─Gather(wtes)─> (B, T, 8, D) ─×[i <= pred_idx]─ReduceSum─> (B, T, D) + wpe
        ─blocks─ln_f─×1/T─> MatMul(table[pred_idx][:n_logits]^T) ─> logits ─draw─> tokens
    """
    g = GraphBuilder("bark_fine", dtype)
    n_codes, V, D = cfg.n_codes_total, cfg.input_vocab_size, cfg.n_embd
    codes = g.input("codes", TensorProto.INT64, ["batch", "seq", n_codes])
    blocks = Blocks(g, cfg, fused=fused, lead=g.op("Shape", [codes], "/shape/lead", end=2))
    pred_idx = g.input("pred_idx", TensorProto.INT64, [])

    tables = np.concatenate([weight_array(state, f"transformer.wtes.{i}.weight") for i in range(n_codes)])  # (8V, D)
    heads = [weight_array(state, f"lm_heads.{j}.weight") for j in range(n_codes - cfg.n_codes_given)]
    tied = all(np.array_equal(heads[j], tables[(j + cfg.n_codes_given) * V:(j + cfg.n_codes_given + 1) * V])
               for j in range(len(heads)))
    table = g.weight("wtes.weight", tables)
    ids = g.op("Add", [codes, g.const(np.arange(n_codes) * V)], "/embed/offsets")
    emb = g.op("Gather", [table, ids], "/embed/tokens")  # (B, T, 8, D)
    used = g.op("LessOrEqual", [g.const(np.arange(n_codes)), pred_idx], "/embed/used")  # (8,)
    used = g.op("Cast", [g.op("Unsqueeze", [used, g.const([1])], "/embed/used_col")], "/embed/used_f",
                to=g.float_type)  # (8, 1)
    x = g.op("ReduceSum", [g.op("Mul", [emb, used], "/embed/mask"), g.const([2])], "/embed/sum", keepdims=0)
    seq = shape_dim(g, codes, 1, "/shape/seq")
    positions = g.op("Range", [g.const(0), seq, g.const(1)], "/embed/positions")
    wpe = g.weight("wpe.weight", weight_array(state, "transformer.wpe.weight"))
    x = g.op("Add", [x, g.op("Gather", [wpe, positions], "/embed/pos")], "/embed/with_pos")

    def attention(qkv: str, i: int) -> str:
        if not fused:
            return blocks.plain_attention(qkv, f"/layers.{i}/attn", None, None)[0]
        # ONNX Runtime's MultiHeadAttention: one (B, nh, T, T) buffer, softmax in place
        q, k, v = g.op("Split", [qkv, g.const([D, D, D])], f"/layers.{i}/attn/split", outputs=3, axis=2)
        return g.op("MultiHeadAttention", [q, k, v], f"/layers.{i}/attn", domain=MS_DOMAIN, num_heads=cfg.n_head)

    layers = [layer_weights(state, i) for i in range(cfg.n_layer)]
    final = (weight_array(state, "transformer.ln_f.weight"), weight_array(state, "transformer.ln_f.bias", required=False))
    h = blocks.stack(blocks.to_rows(x, D, "/embed/rows"), layers, attention, final, last_only=False)  # (B * T, D)

    # The head of codebook pred_idx: rows [pred_idx * V, pred_idx * V + n_logits) of the
    # tied tables (stored once), or of separate heads when a checkpoint unties them.
    if tied:
        src, first = table, pred_idx
    else:
        src = g.weight("lm_heads.weight", np.concatenate(heads))
        first = g.op("Sub", [pred_idx, g.const(cfg.n_codes_given)], "/head/index")
    row0 = g.op("Unsqueeze", [g.op("Mul", [first, g.const(V)], "/head/row0"), g.const([0])], "/head/start")
    rows = g.op("Slice", [src, row0, g.op("Add", [row0, g.const([n_logits])], "/head/end"), g.const([0])],
                "/head/rows")  # (n_logits, D)
    # every position's token drawn in the graph (sampling_head.py): the window's temperature (scaling the
    # hidden state, as in the causal graphs), and a uniform number per position
    temperature = g.input("temperature", TensorProto.FLOAT, ["batch"])
    uniform = g.input("uniform", TensorProto.FLOAT, ["batch", "seq"])
    row_t = g.op("Reshape", [g.op("Expand", [g.op("Unsqueeze", [temperature, g.const([1])], "/draw/t_per_row"),
                                             g.op("Shape", [uniform], "/draw/lead")], "/draw/t_rows"),
                             g.const([-1])], "/draw/t_flat")  # (B * T,)
    h = hidden_over_temperature(g, h, row_t, "/head")
    logits = g.op("MatMul", [h, g.op("Transpose", [rows], "/head/t", perm=[1, 0])], "/head/logits")
    if g.dtype != np.float32:
        logits = float_logits_over_temperature(g, logits, row_t, "/head")  # (B * T, n_logits)
    g.op("Reshape", [logits, blocks.lead_shape(n_logits)], "/head/sequences", outputs=["logits"])  # (B, T, n)
    flat_u = g.op("Reshape", [uniform, g.const([-1])], "/draw/u_flat")
    token, _ = draw_head(g, logits, n_logits, row_t, flat_u, None)
    g.op("Reshape", [token, blocks.lead_shape()], "/draw/sequences", outputs=["tokens"])  # (B, T)
    g.output("logits", TensorProto.FLOAT, ["batch", "seq", n_logits])
    g.output("tokens", TensorProto.INT64, ["batch", "seq"])
    model = g.model(OPSET, "Bark fine GPT (non-causal), one graph for every codebook")
    info = GraphInfo(file="fine.onnx", inputs=("codes", "pred_idx", "temperature", "uniform"),
                     outputs=("logits", "tokens"), logits_start=0, logits_size=n_logits)
    return model, info
