"""A lower bound per stage from the shapes: FLOPs, bytes moved, and this machine's rates.

Each graph call costs at least max(FLOPs / sgemm rate, bytes / stream rate):
the matrix work at the measured sgemm rate, and the weights (plus the KV
cache read) streamed at the measured rate of a weight-bound matrix-vector
product. Both rates are measured here with ONNX Runtime on the same threads.
"""

from __future__ import annotations

import time

import numpy as np

from bark_onnx.runtime.stages.coarse import CoarseOptions
from bark_onnx.runtime.model.config import CodecConfig, GPTConfig

from .workload import Workload

WEIGHT_BYTES = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "int4": 0.5 + 4 / 32}  # int4: + a scale per block of 32


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


def _call(cfg: GPTConfig, new: int, past: int, head_cols: int, wbytes: float, rates: dict) -> float:
    """Seconds for one causal call: `new` tokens after `past` cached ones."""
    d, layers = cfg.n_embd, cfg.n_layer
    params = block_params(cfg) + d * head_cols
    total = past + new
    attn_flops = 2 * 2 * layers * d * new * (past + (new + 1) / 2)  # causal QK^T and PV
    flops = 2 * block_params(cfg) * new + 2 * d * head_cols + attn_flops
    bytes_moved = params * wbytes + 2 * layers * total * d * 4  # weights + the K/V read (fp32 cache)
    return max(flops / rates["sgemm_flops"], bytes_moved / rates["stream_bytes"])


def estimate(configs: dict, codec: CodecConfig, w: Workload, precision: str, rates: dict) -> dict[str, float]:
    """Lower-bound seconds per stage for the workload."""
    wb = WEIGHT_BYTES[precision]
    sem, coarse, fine = configs["semantic"], configs["coarse"], configs["fine"]
    # semantic: a 257-position prefill, then one token per step
    t_sem = _call(sem, 257, 0, 10_001, wb, rates)
    t_sem += sum(_call(sem, 1, 257 + i, 10_001, wb, rates) for i in range(w.semantic_tokens - 1))
    # coarse: per window a fresh prefill of 256 semantic + infer + history, then up to 60 steps
    opts = CoarseOptions()
    t_coarse, done = 0.0, 0
    while done < w.coarse_tokens:
        history = min(done, opts.max_coarse_history)
        prompt = 257 + history
        t_coarse += _call(coarse, prompt, 0, 2048, wb, rates)
        steps = min(opts.sliding_window_len, w.coarse_tokens - done)
        t_coarse += sum(_call(coarse, 1, prompt + i, 2048, wb, rates) for i in range(steps - 1))
        done += steps
    # fine: per window 6 non-causal forwards over 1024 frames
    windows = 1 + max(0, int(np.ceil((w.frames - 1024) / 512)))
    d = fine.n_embd
    fine_flops = 2 * block_params(fine) * 1024 + 4 * fine.n_layer * d * 1024 * 1024 + 2 * d * 1024 * 1024
    fine_bytes = (block_params(fine) * wb) + 1024 * d * 4 * fine.n_layer * 8  # weights + activations
    t_fine = windows * 6 * max(fine_flops / rates["sgemm_flops"], fine_bytes / rates["stream_bytes"])
    return {"semantic": t_sem, "coarse": t_coarse, "fine": t_fine, "codec": codec_seconds(codec, w, rates)}


def codec_seconds(cfg: CodecConfig, w: Workload, rates: dict) -> float:
    """The SEANet decoder's FLOPs (convolutions and LSTM) at the sgemm rate."""
    return codec_flops(cfg, w.frames) / rates["sgemm_flops"]


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

