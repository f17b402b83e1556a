"""Node placement: the checker on the CPU here, and on a CUDA machine (marked `gpu`) the real thing:
fp16 graphs with every heavy node on CUDA and buffers on the device, fp32 graphs that say what falls back."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from bark_onnx.benchmarks.placement import check_model, summarize


def _event(name, op, provider, out="float", params=0):
    return {"cat": "Node", "name": f"{name}_kernel_time",
            "args": {"op_name": op, "provider": provider, "parameter_size": str(params),
                     "output_type_shape": [{out: [1, 16, 64]}]}}


def test_heavy_nodes_on_the_cpu_of_a_gpu_run_are_reported():
    events = [
        _event("/h.0/attn/qkv/MatMul", "MatMul", "CUDAExecutionProvider"),
        _event("/h.0/attn/GroupQueryAttention", "GroupQueryAttention", "CPUExecutionProvider"),
        _event("/embed/tokens/Gather", "Gather", "CPUExecutionProvider", params=33_177_856),
        _event("/shape/seq/Shape", "Shape", "CPUExecutionProvider", out="int64"),
        _event("/h.0/mlp/Erf", "Erf", "CPUExecutionProvider"),
        _event("/h.0/attn/qkv/MatMul", "MatMul", "CUDAExecutionProvider"),  # a second call of the same node
    ]
    result = summarize(events, on_gpu=True)
    assert result["nodes"] == 5 and result["providers"] == {"CUDAExecutionProvider": 1, "CPUExecutionProvider": 4}
    assert sorted(m["op"] for m in result["misplaced"]) == ["Erf", "Gather", "GroupQueryAttention"]
    assert summarize(events, on_gpu=False)["misplaced"][0]["op"] == "MatMul"  # the CPU run expects the CPU


def test_placement_check_runs_every_graph_on_the_cpu(model_dirs, tmp_path):
    for name in ("suno-tiny", "hf-mini"):  # in-place and concatenated caches
        result = check_model(model_dirs[name], ["cpu"], tmp_path / name)
        assert result["ok"] and not result["on_gpu"]
        for stage, graph in result["graphs"].items():
            assert graph["nodes"] > 10 and graph["providers"] == {"CPUExecutionProvider": graph["nodes"]}, stage
        assert result["graphs"]["semantic"]["ops_on_cpu"]["MatMul"] > 0


@pytest.fixture(scope="module")
def fp16_dir(checkpoints, tmp_path_factory):
    from bark_onnx.export.exporter import export_model

    return export_model(str(checkpoints["suno-tiny"]), tmp_path_factory.mktemp("fp16") / "model",
                        precision="fp16", progress=False, report=lambda line: None)


@pytest.mark.gpu
def test_fp16_graphs_run_every_heavy_node_on_cuda(fp16_dir, tmp_path):
    result = check_model(fp16_dir, ["cuda", "cpu"], tmp_path)
    assert result["on_gpu"], "CUDA is listed but did not start (see the warning)"
    assert result["ok"], {stage: g["misplaced"] for stage, g in result["graphs"].items()}


@pytest.mark.gpu
def test_fp16_model_on_cuda_binds_device_buffers(fp16_dir):
    from bark_onnx import Bark
    from bark_onnx.runtime.sessions.providers import session_device

    tts = Bark.load(fp16_dir, providers=["cuda", "cpu"])
    assert tts.placement.device == "cuda"
    assert {session_device(s) for s in tts.sessions.values()} == {"cuda"}
    audio = tts.generate("hello", seed=0, silent=True)
    assert audio.dtype == np.float32 and audio.size > 0 and np.isfinite(audio).all()


@pytest.mark.gpu
def test_fp32_in_place_graphs_on_cuda_say_what_falls_back(model_dirs, tmp_path, caplog):
    from bark_onnx import Bark

    with caplog.at_level(logging.WARNING, logger="bark_onnx.runtime.sessions.providers"):
        Bark.load(model_dirs["suno-tiny"], providers=["cuda", "cpu"])
    assert "GroupQueryAttention" in caplog.text and "--precision fp16" in caplog.text
    result = check_model(model_dirs["suno-tiny"], ["cuda", "cpu"], tmp_path)
    assert "GroupQueryAttention" in {m["op"] for m in result["graphs"]["semantic"]["misplaced"]}


@pytest.mark.gpu
def test_requests_on_cuda_equal_their_solo_results_with_and_without_cuda_graphs(fp16_dir):
    """Many threads on one fp16 model on CUDA: every stage's tokens as each request alone; the steps
    replayed from a captured CUDA graph give the tokens of the full graphs."""
    from concurrent.futures import ThreadPoolExecutor

    from bark_onnx import Bark

    requests = [(f"hello {i}", seed) for i, seed in enumerate((0, 1, 2, 3))]
    results = {}
    for graphs in (False, True):
        tts = Bark.load(fp16_dir, providers=["cuda", "cpu"], max_batch=4, cuda_graph=graphs)
        assert all((d.fixed is not None) == graphs for d in tts.decoders.values())
        solo = [tts.synthesize(text, seed=seed, silent=True, max_gen_duration_s=1.0) for text, seed in requests]
        with ThreadPoolExecutor(len(requests)) as pool:
            together = list(pool.map(lambda r: tts.synthesize(r[0], seed=r[1], silent=True, max_gen_duration_s=1.0),
                                     requests))
        for a, b in zip(solo, together):
            for stage in ("semantic", "coarse", "fine"):
                np.testing.assert_array_equal(getattr(a, stage), getattr(b, stage), err_msg=f"{graphs} {stage}")
        assert all(d.fixed is not None for d in tts.decoders.values()) == graphs  # no fallback happened
        results[graphs] = solo
        tts.close()
    for a, b in zip(results[False], results[True]):
        np.testing.assert_array_equal(a.semantic, b.semantic)
