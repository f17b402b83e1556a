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
The fine graph is non-causal, has no cache, and takes the codebook to predict
as an input, so one graph serves every codebook; its attention is ONNX
Runtime's `MultiHeadAttention` where the causal graphs use fused ops (one
(B, nh, T, T) buffer instead of two), standard ops otherwise.

Between attentions the activations are rows, (B * S, D), and every weight
MatMul's input is declared 2-D in the graph, the form the int8 quantizer
(kernels/quantize.py) rewrites.
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

from .onnx_builder import MS_DOMAIN, OPSET, GraphBuilder
from .sampling_head import draw_head, float_logits_over_temperature, hidden_over_temperature

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


def _np(state: dict, key: str, required: bool = True) -> np.ndarray | None:
    if key not in state:
        if required:
            raise KeyError(key)
        return None
    return state[key].detach().to("cpu").float().numpy()


def layer_weights(state: dict, i: int) -> LayerWeights:
    p = f"transformer.h.{i}."
    t = lambda key: _np(state, p + key).T  # noqa: E731  Linear (out, in) -> MatMul (in, out)
    b = lambda key: _np(state, p + key, required=False)  # noqa: E731
    return LayerWeights(
        ln1_w=_np(state, p + "ln_1.weight"), ln1_b=b("ln_1.bias"),
        qkv_w=t("attn.c_attn.weight"), qkv_b=b("attn.c_attn.bias"),
        proj_w=t("attn.c_proj.weight"), proj_b=b("attn.c_proj.bias"),
        ln2_w=_np(state, p + "ln_2.weight"), ln2_b=b("ln_2.bias"),
        fc_w=t("mlp.c_fc.weight"), fc_b=b("mlp.c_fc.bias"),
        out_w=t("mlp.c_proj.weight"), out_b=b("mlp.c_proj.bias"),
    )


class _Blocks:
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


def _shape_dim(g: GraphBuilder, t: str, axis: int, name: str) -> str:
    """Scalar int64 size of axis `axis` of t."""
    s = g.op("Shape", [t], name, start=axis, end=axis + 1)
    return g.op("Squeeze", [s, g.const([0])], f"{name}/scalar")


def build_causal(cfg: GPTConfig, state: dict, stage: str, logits_range: tuple[int, int], kv: str = "inplace",
                 dtype=np.float32, step_only: bool = False,
                 skip_norm: bool | None = None) -> tuple[onnx.ModelProto, GraphInfo]:
    """The semantic or coarse decoder graph; see the module docstring.

    skip_norm: residual LayerNorms as SkipLayerNormalization (None: in fp16 in-place graphs).

    step_only: the one-token step alone (in-place caches): fixed shapes and no shape
    arithmetic, so a GPU provider can capture it once as a CUDA graph and replay it.
    Its weights are those of the full graph, by name, so the two can share one data file.
    """
    if kv not in ("inplace", "concat"):
        raise ValueError(f"kv must be 'inplace' or 'concat', got {kv!r}")
    if step_only and kv != "inplace":
        raise ValueError("a step-only graph needs the in-place KV cache")
    if skip_norm and kv != "inplace":
        raise ValueError("skip_norm needs the in-place graph (the concat graph keeps to standard ops)")
    g = GraphBuilder(f"bark_{stage}{'_step' if step_only else ''}", dtype)
    merge = stage == "semantic" and not step_only  # steps never merge a second token
    H, hs, D = cfg.n_head, cfg.head_dim, cfg.n_embd
    start, stop = logits_range

    ids = g.input("input_ids", TensorProto.INT64, ["batch", 1 if step_only else "seq"])
    # a step's sequences are one position long: its shapes are constants (see _Blocks)
    lead = None if step_only else g.op("Shape", [ids], "/shape/lead")
    blocks = _Blocks(g, cfg, fused=(kv == "inplace"), lead=lead, skip_norm=skip_norm)
    wte = _np(state, "transformer.wte.weight")
    if stage == "semantic":
        # merge_ids[b, i] adds the embedding of a second token at position i
        # (Bark's text + history context); id `merge_none` is a zero row.
        wte = np.concatenate([wte, np.zeros((1, cfg.n_embd), np.float32)])
    table = g.weight("wte.weight", wte)
    x = g.op("Gather", [table, ids], "/embed/tokens")
    if merge:
        merge_ids = g.input("merge_ids", TensorProto.INT64, ["batch", "seq"])
        x = g.op("Add", [x, g.op("Gather", [table, merge_ids], "/embed/merge")], "/embed/merged")

    cache_dims = ["batch", H, "max_len" if kv == "inplace" else "past_len", hs]
    past = []
    for i in range(cfg.n_layer):
        past.append((g.input(f"past_key.{i}", g.float_type, cache_dims),
                     g.input(f"past_value.{i}", g.float_type, cache_dims)))
    if step_only:
        past_len = g.input("past_length", TensorProto.INT64, ["batch"])  # (B,)
        positions = g.op("Unsqueeze", [past_len, g.const([1])], "/embed/positions")  # (B, 1)
    elif kv == "inplace":
        # Each row has its own filled length, so rows of different requests step together.
        seq = _shape_dim(g, ids, 1, "/shape/seq")
        past_len = g.input("past_length", TensorProto.INT64, ["batch"])  # (B,)
        steps = g.op("Range", [g.const(0), seq, g.const(1)], "/embed/steps")  # (S,)
        rows = g.op("Unsqueeze", [past_len, g.const([1])], "/embed/row_start")  # (B, 1)
        positions = g.op("Add", [rows, steps], "/embed/positions")  # (B, S)
        total = g.op("Add", [past_len, seq], "/shape/total")  # (B,)
    else:
        seq = _shape_dim(g, ids, 1, "/shape/seq")
        past_len = _shape_dim(g, past[0][0], 2, "/shape/past")
        total = g.op("Add", [past_len, seq], "/shape/total")
        positions = g.op("Range", [past_len, total, g.const(1)], "/embed/positions")  # (S,)
    x = g.op("Add", [x, g.op("Gather", [g.weight("wpe.weight", _np(state, "transformer.wpe.weight")), positions],
                             "/embed/pos")], "/embed/sum")

    present_names = [(f"present_key.{i}", f"present_value.{i}") for i in range(cfg.n_layer)]
    if step_only:
        # one new position per row: seqlens_k is the past length itself; the total is the
        # buffer's length, a constant, so nothing about the call's shape is computed on the host
        seqlens_k = g.op("Cast", [past_len], "/shape/seqlens_k", to=TensorProto.INT32)
        longest = g.const(cfg.block_size, np.int32)
    elif kv == "inplace":
        # GroupQueryAttention: seqlens_k (B,) is each row's filled length - 1 after this call;
        # total_sequence_length (scalar) the longest row's.
        total32 = g.op("Cast", [total], "/shape/total_i32", to=TensorProto.INT32)
        seqlens_k = g.op("Sub", [total32, g.const(1, np.int32)], "/shape/seqlens_k")
        longest = g.op("ReduceMax", [total32], "/shape/longest", keepdims=0)
    if kv == "inplace":

        def attention(qkv: str, i: int) -> str:
            # packed qkv (B, S, 3D); the cache buffers are read and written in place
            return g.op("GroupQueryAttention", [qkv, "", "", past[i][0], past[i][1], seqlens_k, longest],
                        f"/layers.{i}/attn", outputs=[f"/layers.{i}/attn/out", *present_names[i]],
                        domain=MS_DOMAIN, num_heads=H, kv_num_heads=H, scale=1 / math.sqrt(hs))[0]
    else:
        qpos = g.op("Unsqueeze", [positions, g.const([1])], "/mask/qpos")  # (S, 1)
        kpos = g.op("Range", [g.const(0), total, g.const(1)], "/mask/kpos")  # (P + S,)
        mask = g.op("LessOrEqual", [kpos, qpos], "/mask/causal")  # (S, P + S): key j visible to query i

        def attention(qkv: str, i: int) -> str:
            y, (k, v) = blocks.plain_attention(qkv, f"/layers.{i}/attn", past[i], mask)
            g.op("Identity", [k], f"/layers.{i}/present_key", outputs=[present_names[i][0]])
            g.op("Identity", [v], f"/layers.{i}/present_value", outputs=[present_names[i][1]])
            return y

    layers = [layer_weights(state, i) for i in range(cfg.n_layer)]
    final = (_np(state, "transformer.ln_f.weight"), _np(state, "transformer.ln_f.bias", required=False))
    h = blocks.stack(blocks.to_rows(x, D, "/embed/rows"), layers, attention, final,
                     last_only=not step_only)  # (B, D): a step's one position or a prefill's last
    # the draw of each row's next token (sampling_head.py): its input id, and P(EOS) in the semantic graph.
    # The temperature scales the hidden state (D columns) rather than the logits (n columns), in float32
    # graphs (fp16 ones scale their logits in float32, sampling_head.py): the logits
    # are those over T, raw where T is 0 (greedy, and what a caller that wants raw logits feeds).
    temperature = g.input("temperature", TensorProto.FLOAT, ["batch"])
    uniform = g.input("uniform", TensorProto.FLOAT, ["batch"])
    band = g.input("band", TensorProto.INT64, ["batch"])  # an index into `bands`
    h = hidden_over_temperature(g, h, temperature, "/lm_head")
    head = _np(state, "lm_head.weight")[start:stop].T  # (D, n): only the columns the loop reads
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
    for i, (pk, pv) in enumerate(present_names):
        g.output(pk, g.float_type, cache_dims if kv == "inplace" else ["batch", H, "total_len", hs])
        g.output(pv, g.float_type, cache_dims if kv == "inplace" else ["batch", H, "total_len", hs])
    model = g.model(OPSET, f"Bark {stage} GPT, KV cache '{kv}'")
    info = GraphInfo(
        file=f"{stage}_step.onnx" if step_only else f"{stage}.onnx",
        inputs=tuple(i.name for i in g.inputs),
        outputs=tuple(o.name for o in g.outputs),
        logits_start=start, logits_size=stop - start,
        merge_none_id=cfg.input_vocab_size if merge else -1, bands=bands,
    )
    return model, info


def draw_bands(stage: str, start: int, stop: int) -> tuple[tuple[int, int], ...]:
    """The logits columns [lo, hi) a draw may take, by band index (constants.py: the semantic stage's
    tokens with EOS (0) or without it (1, early stop off); the coarse stage's codebook 0 or 1)."""
    bands = SEMANTIC_BANDS if stage == "semantic" else COARSE_BANDS
    if any(hi > stop - start for _, hi in bands):
        raise ValueError(f"the {stage} bands {bands} need {max(hi for _, hi in bands)} logits columns, "
                         f"the graph has {stop - start}")
    return bands


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
    blocks = _Blocks(g, cfg, fused=fused, lead=g.op("Shape", [codes], "/shape/lead", end=2))
    pred_idx = g.input("pred_idx", TensorProto.INT64, [])

    tables = np.concatenate([_np(state, f"transformer.wtes.{i}.weight") for i in range(n_codes)])  # (8V, D)
    heads = [_np(state, f"lm_heads.{j}.weight") for j in range(n_codes - cfg.n_codes_given)]
    tied = all(np.array_equal(heads[j], tables[(j + cfg.n_codes_given) * V:(j + cfg.n_codes_given + 1) * V])
               for j in range(len(heads)))
    table = g.weight("wtes.weight", tables)
    ids = g.op("Add", [codes, g.const(np.arange(n_codes) * V)], "/embed/offsets")
    emb = g.op("Gather", [table, ids], "/embed/tokens")  # (B, T, 8, D)
    used = g.op("LessOrEqual", [g.const(np.arange(n_codes)), pred_idx], "/embed/used")  # (8,)
    used = g.op("Cast", [g.op("Unsqueeze", [used, g.const([1])], "/embed/used_col")], "/embed/used_f",
                to=g.float_type)  # (8, 1)
    x = g.op("ReduceSum", [g.op("Mul", [emb, used], "/embed/mask"), g.const([2])], "/embed/sum", keepdims=0)
    seq = _shape_dim(g, codes, 1, "/shape/seq")
    positions = g.op("Range", [g.const(0), seq, g.const(1)], "/embed/positions")
    wpe = g.weight("wpe.weight", _np(state, "transformer.wpe.weight"))
    x = g.op("Add", [x, g.op("Gather", [wpe, positions], "/embed/pos")], "/embed/with_pos")

    def attention(qkv: str, i: int) -> str:
        if not fused:
            return blocks.plain_attention(qkv, f"/layers.{i}/attn", None, None)[0]
        # ONNX Runtime's MultiHeadAttention: one (B, nh, T, T) buffer, softmax in place
        q, k, v = g.op("Split", [qkv, g.const([D, D, D])], f"/layers.{i}/attn/split", outputs=3, axis=2)
        return g.op("MultiHeadAttention", [q, k, v], f"/layers.{i}/attn", domain=MS_DOMAIN, num_heads=cfg.n_head)

    layers = [layer_weights(state, i) for i in range(cfg.n_layer)]
    final = (_np(state, "transformer.ln_f.weight"), _np(state, "transformer.ln_f.bias", required=False))
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
