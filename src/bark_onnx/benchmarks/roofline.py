"""Lower bounds from the shapes: the work of each graph call, and this machine's rates.

`Work` is what one call computes and moves (weight and attention MACs, weight and
KV-cache bytes); its bound is the larger of the MACs at the machine's measured
GEMM rates and the bytes at its measured read rate. `segment_calls` walks every
call of one segment by Bark's algorithm (windows, prefills, steps, fine passes),
so a stage's bound is the sum of its calls' bounds. The rates are measured here
with ONNX Runtime on the same threads: `machine_rates` (one sgemm rate and one
stream rate, for `bark-onnx bench`) or call_roofline's `machine_peaks` (the
int8 and fp32 GEMMs at each row count, for `bark-onnx bench roofline`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from bark_onnx.runtime.constants import (
    CODEBOOK_SIZE, COARSE_LOGITS, FINE_HISTORY, FINE_WINDOW, MAX_TEXT_TOKENS, N_COARSE_CODEBOOKS, N_FINE_CODEBOOKS,
    SEMANTIC_LOGITS, SEMANTIC_TO_COARSE_RATIO,
)
from bark_onnx.runtime.model.config import CodecConfig, GPTConfig
from bark_onnx.runtime.stages.coarse import CoarseOptions
from bark_onnx.runtime.stages.fine import fine_windows

from .workload import STAGES, Workload

WEIGHT_BYTES = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "int4": 0.5 + 4 / 32}  # int4: + a scale per block of 32
SEMANTIC_HEAD = SEMANTIC_LOGITS[1] - SEMANTIC_LOGITS[0]  # the logits columns each graph's head computes
COARSE_HEAD = COARSE_LOGITS[1] - COARSE_LOGITS[0]


def cpu_session(nodes, inputs, outputs, inits, threads: int):
    """A session of a small graph of ONNX Runtime's own ops (contrib ops too) on the CPU provider."""
    import onnxruntime as ort
    from onnx import helper

    graph = helper.make_graph(nodes, "rate", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = min(model.ir_version, 10)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _matmul_session(m: int, k: int, n: int, threads: int):
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((k, n), dtype=np.float32)
    return cpu_session([helper.make_node("MatMul", ["x", "w"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
                       [numpy_helper.from_array(w, "w")], threads)


def best_time(fn, repeat: int) -> float:
    """The fastest of `repeat` calls of fn, after an untimed one: a rate's peak is what the machine can do."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def machine_rates(threads: int) -> dict[str, float]:
    """Measured sgemm FLOP/s (887 x 768 x 3072) and weight-streaming bytes/s (1 x 4096 x 16384)."""
    m, k, n = 887, 768, 3072
    sess = _matmul_session(m, k, n, threads)
    x = np.random.default_rng(1).standard_normal((m, k), dtype=np.float32)
    flops = 2 * m * k * n / best_time(lambda: sess.run(None, {"x": x}), 5)
    return {"sgemm_flops": flops, "stream_bytes": stream_rate(threads)}


def stream_rate(threads: int) -> float:
    """Bytes per second a one-row fp32 product streams from 256 MB of weights, far beyond the caches."""
    k, n = 4096, 16384
    sess = _matmul_session(1, k, n, threads)
    x = np.random.default_rng(2).standard_normal((1, k), dtype=np.float32)
    return 4 * k * n / best_time(lambda: sess.run(None, {"x": x}), 5)


def block_params(cfg: GPTConfig) -> int:
    d = cfg.n_embd
    return cfg.n_layer * 12 * d * d  # qkv 3d^2 + proj d^2 + mlp 8d^2


# ------------------------------------------------------------------ the work of a call


@dataclass
class Work:
    """What a call computes and moves: weight MACs (at the GEMM's `gemm_rows`), attention MACs
    (fp32), and bytes (weights once, the KV cache read)."""

    weight_macs: float
    attention_macs: float
    weight_bytes: float
    cache_bytes: float
    gemm_rows: int

    def bound(self, peaks: dict) -> tuple[float, str]:
        """(seconds, 'compute' or 'memory'): the larger of the MACs at the machine's rates and the
        bytes at its read rate. peaks: {'gemm': {rows: MAC/s}, 'fp32': MAC/s, 'read': B/s}; the GEMM
        rate is that of the measured row count nearest the call's."""
        gemm = peaks["gemm"][min(peaks["gemm"], key=lambda m: abs(m - self.gemm_rows))]
        compute = self.weight_macs / gemm + self.attention_macs / peaks["fp32"]
        memory = (self.weight_bytes + self.cache_bytes) / peaks["read"]
        return (compute, "compute") if compute >= memory else (memory, "memory")


def causal_work(cfg: GPTConfig, head_cols: int, rows: int, new: int, past: int, weight_bytes: float,
                kv_bytes: int) -> Work:
    """A semantic or coarse call: `rows` sequences of `new` positions after `past` cached ones."""
    d, layers = cfg.n_embd, cfg.n_layer
    attention = rows * layers * 2 * d * new * (past + (new + 1) / 2)  # q.k and p.v over the causal keys
    return Work(weight_macs=rows * (new * block_params(cfg) + d * head_cols),  # the head reads the last position
                attention_macs=attention, weight_bytes=(block_params(cfg) + d * head_cols) * weight_bytes,
                cache_bytes=rows * layers * 2 * (past + new) * d * kv_bytes, gemm_rows=rows * new)


def fine_work(cfg: GPTConfig, positions: int, head_cols: int, weight_bytes: float, rows: int = 1) -> Work:
    """A fine pass: `rows` windows of `positions` frames, attention bidirectional."""
    d = cfg.n_embd
    return Work(weight_macs=rows * positions * (block_params(cfg) + d * head_cols),
                attention_macs=rows * cfg.n_layer * 2 * d * positions * positions,
                weight_bytes=(block_params(cfg) + d * head_cols) * weight_bytes, cache_bytes=0,
                gemm_rows=rows * positions)


def codec_work(cfg: CodecConfig, frames: int, weight_bytes: float, rows: int = 1) -> Work:
    """A codec call: its convolutions and LSTM counted as fp32 MACs (the codec computes in fp32)."""
    return Work(weight_macs=0, attention_macs=rows * codec_flops(cfg, frames) / 2, weight_bytes=weight_bytes,
                cache_bytes=0, gemm_rows=rows * frames)


def segment_calls(configs: dict, codec: CodecConfig, w: Workload, precision: str, voice: bool = False,
                  rows: int = 1, kv_bytes: int = 4, codec_bytes: float = 0.0):
    """Every graph call of one segment by Bark's algorithm, as (stage, kind, Work): `rows` requests
    in step (each call carries a row of each). kind names the call type the `bench roofline`
    table times ('step', 'prefill', 'fine pass', 'codec chunk').

    voice: the longest histories a voice preset gives (626 coarse tokens, see voice_coarse_history;
    512 frames of fine history); without one both start empty."""
    wb = WEIGHT_BYTES[precision]
    sem, coarse, fine = configs["semantic"], configs["coarse"], configs["fine"]
    # semantic: text and history merged into 256 positions, the infer token, then one token a step
    yield "semantic", "prefill", causal_work(sem, SEMANTIC_HEAD, rows, MAX_TEXT_TOKENS + 1, 0, wb, kv_bytes)
    for i in range(w.semantic_tokens - 1):
        yield "semantic", "step", causal_work(sem, SEMANTIC_HEAD, rows, 1, MAX_TEXT_TOKENS + 1 + i, wb, kv_bytes)
    # coarse: each window a fresh prefill of 256 semantic + infer + history (the prefill draws the
    # window's first token), then a step for each of the others
    opts = CoarseOptions()
    history = voice_coarse_history(opts) if voice else 0
    done = 0
    while done < w.coarse_tokens:
        prompt = MAX_TEXT_TOKENS + 1 + min(history + done, opts.max_coarse_history)
        yield "coarse", "prefill", causal_work(coarse, COARSE_HEAD, rows, prompt, 0, wb, kv_bytes)
        steps = min(opts.sliding_window_len, w.coarse_tokens - done)
        for i in range(steps - 1):
            yield "coarse", "step", causal_work(coarse, COARSE_HEAD, rows, 1, prompt + i, wb, kv_bytes)
        done += steps
    # fine: each window one bidirectional pass per codebook it fills
    passes = len(fine_windows(w.frames, FINE_HISTORY if voice else 0)) * (N_FINE_CODEBOOKS - N_COARSE_CODEBOOKS)
    for _ in range(passes):
        yield "fine", "fine pass", fine_work(fine, FINE_WINDOW, CODEBOOK_SIZE, wb, rows)
    yield "codec", "codec chunk", codec_work(codec, w.frames, codec_bytes, rows)


def voice_coarse_history(opts: CoarseOptions) -> int:
    """The coarse tokens of history the longest voice prompt leaves (Bark trims it to whole semantic
    tokens, then drops the last two): 626 with Bark's 630."""
    return int(round(opts.max_semantic_history * SEMANTIC_TO_COARSE_RATIO)) - 2


def rates_as_peaks(rates: dict) -> dict:
    """`machine_rates` (one sgemm FLOP rate, one stream rate) in `Work.bound`'s terms."""
    macs = rates["sgemm_flops"] / 2
    return {"gemm": {1: macs}, "fp32": macs, "read": rates["stream_bytes"]}


def estimate(configs: dict, codec: CodecConfig, w: Workload, precision: str, rates: dict) -> dict[str, float]:
    """Lower-bound seconds per stage for the workload (no voice), at the sgemm and stream rates."""
    peaks = rates_as_peaks(rates)
    seconds = dict.fromkeys(STAGES, 0.0)
    for stage, _, work in segment_calls(configs, codec, w, precision):
        seconds[stage] += work.bound(peaks)[0]
    return seconds


def codec_flops(cfg: CodecConfig, frames: int) -> float:
    """The SEANet decoder's FLOPs (convolutions and LSTM) for `frames` code frames."""
    t = frames
    ch = cfg.num_filters * 2 ** len(cfg.upsampling_ratios)
    flops = 2 * cfg.hidden_size * ch * cfg.kernel_size * t  # first conv
    flops += cfg.num_lstm_layers * 2 * 4 * 2 * ch * ch * t  # LSTM gates (input and hidden)
    for ratio in cfg.upsampling_ratios:
        flops += 2 * ch * (ch // 2) * 2 * ratio * t  # transposed conv, output length t * ratio
        t *= ratio
        ch //= 2
        hidden = ch // cfg.compress
        flops += 2 * t * (ch * hidden * cfg.residual_kernel_size + hidden * ch + ch * ch)  # residual block
    flops += 2 * t * ch * cfg.audio_channels * cfg.last_kernel_size
    return flops

