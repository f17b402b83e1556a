"""ONNX graphs of Bark's GPTs, built node by node from the checkpoint's weights.

Two KV-cache layouts for the causal (semantic, coarse) graphs:

- `inplace` (default; CPU and CUDA): ONNX Runtime's fused ops. Attention is
  `GroupQueryAttention` over a preallocated (B, nh, max_len, hs) buffer that
  the runtime binds as both `past_key.i` and `present_key.i`, so a step
  writes its keys in place; `past_length` says how much of it is filled.
  bias + GELU run as `BiasGelu`, and in fp16 graphs (CUDA) LayerNorm +
  residual add as `SkipLayerNormalization`.
- `concat` (standard opset-17 ops only, for TensorRT and other runtimes):
  `present = Concat(past, new)`, so the cache grows by one row per step.

One graph serves the prefill and the one-token steps. Logits come out for the
last position only, and only for the vocabulary columns the loop samples from;
the graph also draws each row's next token from them (sampling_head.py), so a
decoding step's result is a token id, and P(EOS) in the semantic graph.
The transformer blocks are gpt_blocks.py's; the fine model's graph is fine_graph.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto

from bark_onnx.runtime.constants import COARSE_BANDS, SEMANTIC_BANDS
from bark_onnx.runtime.constants import SEMANTIC_EOS_TOKEN
from bark_onnx.runtime.model.config import GPTConfig, GraphInfo

from .gpt_blocks import Blocks, layer_weights, shape_dim, weight_array
from .onnx_builder import MS_DOMAIN, OPSET, GraphBuilder
from .sampling_head import draw_head, float_logits_over_temperature, hidden_over_temperature

def build_causal(cfg: GPTConfig, state: dict, stage: str, logits_range: tuple[int, int], kv: str = "inplace",
                 dtype=np.float32, step_only: bool = False,
                 skip_norm: bool | None = None) -> tuple[onnx.ModelProto, GraphInfo]:
    """The semantic or coarse decoder graph; see the module docstring.

        input_ids (+ merge_ids) ─embed─> + wpe[positions] ─blocks (attention over the cache)─> ln_f
        ─last position─> ÷T ─lm_head[start:stop]─> logits ─draw─> token (+ P(EOS))

    skip_norm: residual LayerNorms as SkipLayerNormalization (None: in fp16 in-place graphs).

    step_only: the one-token step alone (in-place caches): fixed shapes and no shape
    arithmetic, so a GPU provider can capture it once as a CUDA graph and replay it.
    Its weights are those of the full graph, by name, so the two can share one data file.
    """
    _check_causal_options(kv, step_only, skip_norm)
    g = GraphBuilder(f"bark_{stage}{'_step' if step_only else ''}", dtype)
    merge = stage == "semantic" and not step_only  # steps never merge a second token
    ids = g.input("input_ids", TensorProto.INT64, ["batch", 1 if step_only else "seq"])
    # a step's sequences are one position long: its shapes are constants (see Blocks)
    lead = None if step_only else g.op("Shape", [ids], "/shape/lead")
    blocks = Blocks(g, cfg, fused=(kv == "inplace"), lead=lead, skip_norm=skip_norm)
    x = _embed_tokens(g, cfg, state, stage, ids, merge)
    past = _cache_inputs(g, cfg, kv)
    x, lengths = _add_positions(g, cfg, state, kv, step_only, ids, past, x)
    present = [(f"present_key.{i}", f"present_value.{i}") for i in range(cfg.n_layer)]
    attention = _causal_attention(g, cfg, blocks, kv, past, present, lengths)
    layers = [layer_weights(state, i) for i in range(cfg.n_layer)]
    final = (weight_array(state, "transformer.ln_f.weight"), weight_array(state, "transformer.ln_f.bias", required=False))
    h = blocks.stack(blocks.to_rows(x, cfg.n_embd, "/embed/rows"), layers, attention, final,
                     last_only=not step_only)  # (B, D): a step's one position or a prefill's last
    bands = _draw_token(g, blocks, state, stage, logits_range, h)
    _cache_outputs(g, cfg, kv, present)
    model = g.model(OPSET, f"Bark {stage} GPT, KV cache '{kv}'")
    start, stop = logits_range
    info = GraphInfo(
        file=f"{stage}_step.onnx" if step_only else f"{stage}.onnx",
        inputs=tuple(i.name for i in g.inputs),
        outputs=tuple(o.name for o in g.outputs),
        logits_start=start, logits_size=stop - start,
        merge_none_id=cfg.input_vocab_size if merge else -1, bands=bands,
    )
    return model, info


def _check_causal_options(kv: str, step_only: bool, skip_norm: bool | None) -> None:
    if kv not in ("inplace", "concat"):
        raise ValueError(f"kv must be 'inplace' or 'concat', got {kv!r}")
    if step_only and kv != "inplace":
        raise ValueError("a step-only graph needs the in-place KV cache")
    if skip_norm and kv != "inplace":
        raise ValueError("skip_norm needs the in-place graph (the concat graph keeps to standard ops)")


def _embed_tokens(g: GraphBuilder, cfg: GPTConfig, state: dict, stage: str, ids: str, merge: bool) -> str:
    """The token embeddings (B, S, D); with `merge`, plus those of the `merge_ids` input.

        ids ─Gather(wte)─┬─────────────────────────> x
        merge_ids ─Gather(wte)─Add─┘ (semantic prefills only)
    """
    wte = weight_array(state, "transformer.wte.weight")
    if stage == "semantic":
        # merge_ids[b, i] adds the embedding of a second token at position i
        # (Bark's text + history context); id `merge_none` is a zero row.
        wte = np.concatenate([wte, np.zeros((1, cfg.n_embd), np.float32)])
    table = g.weight("wte.weight", wte)
    x = g.op("Gather", [table, ids], "/embed/tokens")
    if merge:
        merge_ids = g.input("merge_ids", TensorProto.INT64, ["batch", "seq"])
        x = g.op("Add", [x, g.op("Gather", [table, merge_ids], "/embed/merge")], "/embed/merged")
    return x


def _cache_inputs(g: GraphBuilder, cfg: GPTConfig, kv: str) -> list[tuple[str, str]]:
    """past_key.i, past_value.i per layer: the in-place buffers (B, nh, max_len, hs) or the concat caches."""
    return [(g.input(f"past_key.{i}", g.float_type, _cache_dims(cfg, kv)),
             g.input(f"past_value.{i}", g.float_type, _cache_dims(cfg, kv))) for i in range(cfg.n_layer)]


def _cache_dims(cfg: GPTConfig, kv: str) -> list:
    return ["batch", cfg.n_head, "max_len" if kv == "inplace" else "past_len", cfg.head_dim]


@dataclass
class _Lengths:
    """What attention needs of the call's lengths: positions of the new tokens, and per layout
    GroupQueryAttention's seqlens_k (B,) and longest total (in place) or the total (concat)."""

    positions: str
    seqlens_k: str | None = None
    longest: str | None = None
    total: str | None = None


def _add_positions(g: GraphBuilder, cfg: GPTConfig, state: dict, kv: str, step_only: bool, ids: str,
                   past: list[tuple[str, str]], x: str) -> tuple[str, _Lengths]:
    """x + wpe[positions], and the lengths attention reads.

    in place: each row has its own filled length (the `past_length` input), so rows of different
    requests step together; concat: the cache's own length."""
    if step_only:
        past_len = g.input("past_length", TensorProto.INT64, ["batch"])  # (B,)
        lengths = _Lengths(g.op("Unsqueeze", [past_len, g.const([1])], "/embed/positions"))  # (B, 1)
    elif kv == "inplace":
        seq = shape_dim(g, ids, 1, "/shape/seq")
        past_len = g.input("past_length", TensorProto.INT64, ["batch"])  # (B,)
        steps = g.op("Range", [g.const(0), seq, g.const(1)], "/embed/steps")  # (S,)
        rows = g.op("Unsqueeze", [past_len, g.const([1])], "/embed/row_start")  # (B, 1)
        lengths = _Lengths(g.op("Add", [rows, steps], "/embed/positions"),  # (B, S)
                           total=g.op("Add", [past_len, seq], "/shape/total"))  # (B,)
    else:
        seq = shape_dim(g, ids, 1, "/shape/seq")
        past_len = shape_dim(g, past[0][0], 2, "/shape/past")
        total = g.op("Add", [past_len, seq], "/shape/total")
        lengths = _Lengths(g.op("Range", [past_len, total, g.const(1)], "/embed/positions"), total=total)  # (S,)
    x = g.op("Add", [x, g.op("Gather", [g.weight("wpe.weight", weight_array(state, "transformer.wpe.weight")),
                                        lengths.positions], "/embed/pos")], "/embed/sum")
    if step_only:
        # one new position per row: seqlens_k is the past length itself; the total is the
        # buffer's length, a constant, so nothing about the call's shape is computed on the host
        lengths.seqlens_k = g.op("Cast", [past_len], "/shape/seqlens_k", to=TensorProto.INT32)
        lengths.longest = g.const(cfg.block_size, np.int32)
    elif kv == "inplace":
        # GroupQueryAttention: seqlens_k (B,) is each row's filled length - 1 after this call;
        # total_sequence_length (scalar) the longest row's.
        total32 = g.op("Cast", [lengths.total], "/shape/total_i32", to=TensorProto.INT32)
        lengths.seqlens_k = g.op("Sub", [total32, g.const(1, np.int32)], "/shape/seqlens_k")
        lengths.longest = g.op("ReduceMax", [total32], "/shape/longest", keepdims=0)
    return x, lengths


def _causal_attention(g: GraphBuilder, cfg: GPTConfig, blocks: Blocks, kv: str, past: list[tuple[str, str]],
                      present: list[tuple[str, str]], lengths: _Lengths):
    """attention(qkv, i) of layer i: GroupQueryAttention over the in-place buffers, or standard ops
    over the concatenated cache with a causal mask."""
    H, hs = cfg.n_head, cfg.head_dim
    if kv == "inplace":

        def attention(qkv: str, i: int) -> str:
            # packed qkv (B, S, 3D); the cache buffers are read and written in place
            return g.op("GroupQueryAttention", [qkv, "", "", past[i][0], past[i][1], lengths.seqlens_k,
                                                lengths.longest],
                        f"/layers.{i}/attn", outputs=[f"/layers.{i}/attn/out", *present[i]],
                        domain=MS_DOMAIN, num_heads=H, kv_num_heads=H, scale=1 / math.sqrt(hs))[0]

        return attention
    qpos = g.op("Unsqueeze", [lengths.positions, g.const([1])], "/mask/qpos")  # (S, 1)
    kpos = g.op("Range", [g.const(0), lengths.total, g.const(1)], "/mask/kpos")  # (P + S,)
    mask = g.op("LessOrEqual", [kpos, qpos], "/mask/causal")  # (S, P + S): key j visible to query i

    def attention(qkv: str, i: int) -> str:
        y, (k, v) = blocks.plain_attention(qkv, f"/layers.{i}/attn", past[i], mask)
        g.op("Identity", [k], f"/layers.{i}/present_key", outputs=[present[i][0]])
        g.op("Identity", [v], f"/layers.{i}/present_value", outputs=[present[i][1]])
        return y

    return attention


def _draw_token(g: GraphBuilder, blocks: Blocks, state: dict, stage: str, logits_range: tuple[int, int],
                h: str) -> tuple[tuple[int, int], ...]:
    """The head and the draw of each row's next token (sampling_head.py): the outputs `logits`,
    `token` (its input id) and, in the semantic graph, `eos_p`; returns the draw's bands.

    The temperature scales the hidden state (D columns) rather than the logits (n columns), in float32
    graphs (fp16 ones scale their logits in float32, sampling_head.py): the logits are those over T,
    raw where T is 0 (greedy, and what a caller that wants raw logits feeds).
    """
    start, stop = logits_range
    temperature = g.input("temperature", TensorProto.FLOAT, ["batch"])
    uniform = g.input("uniform", TensorProto.FLOAT, ["batch"])
    band = g.input("band", TensorProto.INT64, ["batch"])  # an index into `bands`
    h = hidden_over_temperature(g, h, temperature, "/lm_head")
    head = weight_array(state, "lm_head.weight")[start:stop].T  # (D, n): only the columns the loop reads
    fp32 = g.dtype == np.float32
    logits = blocks.matmul(h, head, "/lm_head", "lm_head.weight", out="logits" if fp32 else None)  # (B, n)
    if not fp32:
        logits = float_logits_over_temperature(g, logits, temperature, "/lm_head", output="logits")
    bands = draw_bands(stage, start, stop)
    token, eos_p = draw_head(g, logits, stop - start, temperature, uniform, band, bands,
                             eos=SEMANTIC_EOS_TOKEN - start if stage == "semantic" else None)
    g.op("Add", [token, g.const(start)], "/draw/id", outputs=["token"])
    g.output("logits", TensorProto.FLOAT, ["batch", stop - start])
    g.output("token", TensorProto.INT64, ["batch"])
    if eos_p is not None:
        g.op("Identity", [eos_p], "/draw/eos_output", outputs=["eos_p"])
        g.output("eos_p", TensorProto.FLOAT, ["batch"])
    return bands


def _cache_outputs(g: GraphBuilder, cfg: GPTConfig, kv: str, present: list[tuple[str, str]]) -> None:
    """present_key.i, present_value.i: the same buffers as the inputs (in place) or the grown caches."""
    dims = _cache_dims(cfg, kv) if kv == "inplace" else ["batch", cfg.n_head, "total_len", cfg.head_dim]
    for pk, pv in present:
        g.output(pk, g.float_type, dims)
        g.output(pv, g.float_type, dims)


def draw_bands(stage: str, start: int, stop: int) -> tuple[tuple[int, int], ...]:
    """The logits columns [lo, hi) a draw may take, by band index (constants.py: the semantic stage's
    tokens with EOS (0) or without it (1, early stop off); the coarse stage's codebook 0 or 1)."""
    bands = SEMANTIC_BANDS if stage == "semantic" else COARSE_BANDS
    if any(hi > stop - start for _, hi in bands):
        raise ValueError(f"the {stage} bands {bands} need {max(hi for _, hi in bands)} logits columns, "
                         f"the graph has {stop - start}")
    return bands
