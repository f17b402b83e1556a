"""Providers, placement and precision on the CPU, with onnxruntime-gpu's behaviour faked.

onnxruntime-gpu lists CUDA and TensorRT whether or not their libraries load,
and a session that cannot start one runs on the next without a word; these
tests fake that (the provider list, the probe, sessions that report what they
got) and check what bark-onnx decides and says.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings

import onnxruntime as ort
import pytest

from bark_onnx.runtime.sessions import providers as P
from bark_onnx.runtime.errors import BarkOnnxError
from bark_onnx.runtime.sessions.session import make_placement

CPU, CUDA, TRT = P.CPU, P.CUDA, P.TENSORRT


class FakeSession:
    def __init__(self, *providers):
        self.providers = list(providers)

    def get_providers(self):
        return self.providers


@pytest.fixture
def gpu_build(monkeypatch):
    """onnxruntime-gpu's provider list; the probe says CUDA starts unless a test says otherwise."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: [TRT, CUDA, CPU])
    monkeypatch.setattr(P, "cuda_status", lambda: (True, ""))
    monkeypatch.setattr(P, "provider_library_error", lambda provider: "libcudnn.so.9: cannot open shared object file")
    P._warn_once.cache_clear()
    yield monkeypatch
    P._warn_once.cache_clear()


def test_default_providers_are_cuda_then_cpu_and_tensorrt_only_by_name(gpu_build):
    assert P.resolve_providers(None) == (CUDA, CPU)
    assert P.resolve_providers(["tensorrt", "cuda"]) == (TRT, CUDA, CPU)
    assert P.resolve_providers("cpu") == (CPU,)
    placement = make_placement(None, threads=1)
    assert placement.active == (CUDA, CPU) and placement.device == "cuda"


def test_cpu_build_refuses_cuda_with_both_extras_named(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    assert P.resolve_providers(None) == (CPU,)
    with pytest.raises(BarkOnnxError, match=r"bark-onnx\[gpu\].*bark-onnx\[cpu\]"):
        P.resolve_providers(["cuda"])


def test_cuda_that_does_not_start_is_dropped_with_the_reason(gpu_build, caplog):
    gpu_build.setattr(P, "cuda_status", lambda: (False, "libcublasLt.so.13: cannot open shared object file"))
    with caplog.at_level(logging.WARNING, logger="bark_onnx.runtime.sessions.providers"):
        placement = make_placement(["tensorrt", "cuda", "cpu"], threads=1)
        make_placement(None, threads=1)
        make_placement(["cuda"], threads=2)
    assert placement.providers == (TRT, CUDA, CPU) and placement.active == (CPU,)
    assert placement.device == "cpu" and not placement.on_gpu
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2  # once per distinct message, not once per load
    assert "libcublasLt.so.13" in warnings[0] and "TensorRT and CUDA" in warnings[0] and "[gpu]" in warnings[0]


def test_placement_follows_the_providers_the_sessions_got(gpu_build, caplog):
    placement = make_placement(["cuda", "cpu"], threads=1)
    sessions = {s: FakeSession(CUDA, CPU) for s in ("semantic", "coarse", "fine", "codec")}
    settled = P.settle_placement(placement, sessions)
    assert settled.active == (CUDA, CPU) and settled.device == "cuda"
    assert not caplog.records

    sessions["coarse"] = FakeSession(CPU)  # a session that silently fell back
    with caplog.at_level(logging.WARNING, logger="bark_onnx.runtime.sessions.providers"):
        settled = P.settle_placement(placement, sessions)
    assert settled.active == (CPU,) and settled.device == "cpu"
    message = caplog.records[0].getMessage()
    assert "coarse session run" in message and "semantic" not in message and "libcudnn.so.9" in message


def test_session_device_is_where_bound_buffers_live():
    assert P.session_device(FakeSession(CUDA, CPU)) == "cuda"
    assert P.session_device(FakeSession(TRT, CUDA, CPU)) == "cuda"
    assert P.session_device(FakeSession(CPU)) == "cpu"


def test_a_real_session_that_ignores_cuda_gives_a_cpu_placement(gpu_build, model_dirs, caplog):
    """onnxruntime (CPU build) drops a CUDA provider it lacks; the model then runs with host buffers."""
    from bark_onnx import Bark

    with caplog.at_level(logging.WARNING, logger="bark_onnx.runtime.sessions.providers"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # onnxruntime's own note that it lacks the provider
        tts = Bark.load(model_dirs["suno-tiny"], providers=["cuda", "cpu"], threads=1)
    assert tts.placement.providers == (CUDA, CPU) and tts.placement.device == "cpu"
    assert tts.decoders["semantic"].device == "cpu"
    assert any("run without it" in r.getMessage() for r in caplog.records)
    assert tts.text_to_semantic("hello", temperature=0, max_gen_duration_s=0.1, silent=True).size > 0


@pytest.mark.parametrize("precision, active, kv, expected", [
    ("fp16", (CUDA, CPU), "inplace", None),
    ("fp32", (CUDA, CPU), "inplace", ["GroupQueryAttention", "fp16/bf16", "--precision fp16"]),
    ("fp32", (CUDA, CPU), "concat", ["half the speed", "--precision fp16"]),
    ("int8", (CUDA, CPU), "inplace", ["DynamicQuantizeMatMul has no CUDA kernel", "GroupQueryAttention",
                                      "--precision fp16"]),
    ("int4", (CUDA, CPU), "inplace", ["MatMulNBits", "GroupQueryAttention", "--precision fp16"]),
    ("int8", (TRT, CUDA, CPU), "concat", ["DynamicQuantizeMatMul"]),
    ("fp16", (CPU,), "inplace", ["slow", "--precision fp32"]),
    ("fp32", (CPU,), "inplace", None),
    ("int8", (CPU,), "inplace", None),
])
def test_precision_rule(precision, active, kv, expected):
    placement = P.Placement((CUDA, CPU), 1, active)
    assert P.default_precision(placement) == ("fp16" if active[0] != CPU else "int8")
    message = P.precision_warning(precision, placement, kv)
    if expected is None:
        assert message is None
    else:
        for part in expected:
            assert part in message
        if "concat" == kv and precision != "int8":
            assert "GroupQueryAttention" not in message


def test_cuda_options_and_provider_order(gpu_build, model_dirs):
    from bark_onnx.runtime.sessions.gpu_options import session_providers

    graph = model_dirs["suno-tiny"] / "codec.onnx"
    providers = session_providers(graph, P.Placement((CUDA, CPU), 1, (CUDA, CPU)), fp16=True)
    assert [name for name, _ in providers] == [CUDA, CPU]
    assert providers[0][1]["cudnn_conv_algo_search"] == "HEURISTIC"
    assert providers[0][1]["arena_extend_strategy"] == "kSameAsRequested"
    assert session_providers(graph, P.Placement((CUDA, CPU), 1, (CPU,)), fp16=True) == [(CPU, {})]


def _shapes(profile: str) -> dict[str, str]:
    return dict(item.split(":") for item in profile.split(","))


def test_tensorrt_profiles_cover_the_dynamic_dimensions(model_dirs):
    from bark_onnx.runtime.model.config import ModelConfig
    from bark_onnx.runtime.sessions.gpu_options import trt_profile

    inplace = ModelConfig.load(model_dirs["suno-tiny"])  # 2 heads of 32, KV buffers of 1024 positions
    low, opt, high = (_shapes(trt_profile(inplace, "semantic")[f"trt_profile_{k}_shapes"])
                      for k in ("min", "opt", "max"))
    assert set(low) == {"input_ids", "merge_ids"} | {f"past_{k}.{i}" for k in ("key", "value") for i in range(2)}
    assert (low["input_ids"], opt["input_ids"], high["input_ids"]) == ("1x1", "1x1", "8x1024")
    assert low["past_key.0"] == opt["past_key.0"] == "1x2x1024x32" and high["past_key.0"] == "8x2x1024x32"

    concat = ModelConfig.load(model_dirs["hf-mini"])  # 4 heads of 24, caches that grow
    low, opt, high = (_shapes(trt_profile(concat, "coarse")[f"trt_profile_{k}_shapes"]) for k in ("min", "opt", "max"))
    assert (low["past_value.2"], opt["past_value.2"], high["past_value.2"]) == ("1x4x0x24", "1x4x512x24", "8x4x1023x24")
    fine = trt_profile(concat, "fine")
    assert fine["trt_profile_min_shapes"] == "codes:1x1x8" and fine["trt_profile_max_shapes"] == "codes:8x1024x8"
    codec = trt_profile(concat, "codec")
    assert codec["trt_profile_opt_shapes"] == "codes:1x8x976" and codec["trt_profile_max_shapes"] == "codes:8x8x2048"


def test_tensorrt_caches_live_in_the_user_cache_and_follow_the_graphs(gpu_build, model_dirs, tmp_path):
    from bark_onnx.runtime.sessions.gpu_options import session_providers

    gpu_build.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = shutil.copytree(model_dirs["hf-mini"], tmp_path / "model")
    placement = P.Placement((TRT, CUDA, CPU), 1, (TRT, CUDA, CPU))
    providers = session_providers(model / "coarse.onnx", placement, fp16=False)
    assert [name for name, _ in providers] == [TRT, CUDA, CPU]
    trt = providers[0][1]
    cache = trt["trt_engine_cache_path"]
    assert cache.startswith(str(tmp_path / "cache" / "bark_onnx" / "trt")) and str(model) not in cache
    assert trt["trt_timing_cache_path"] == cache and trt["trt_engine_cache_enable"] and not trt["trt_fp16_enable"]
    assert "past_key.0:1x4x0x24" in trt["trt_profile_min_shapes"]
    assert os.path.isdir(cache) and not (model / "trt_cache").exists()
    stat = (model / "coarse.onnx").stat()
    os.utime(model / "coarse.onnx", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # exported again
    again = session_providers(model / "coarse.onnx", placement, fp16=False)[0][1]["trt_engine_cache_path"]
    assert again != cache  # engines hold the weights: new graphs, new engines


def test_probe_preloads_cuda_once_and_keeps_stdout_clean(monkeypatch, capsys):
    calls = []

    def preload():
        calls.append(1)
        print("Failed to load libcublasLt.so.13: cannot open shared object file")

    def no_device(*args):
        raise RuntimeError("CUDA Provider not available, can't get interface for it")

    monkeypatch.setattr(ort, "preload_dlls", preload, raising=False)
    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_shape_and_type", no_device)
    monkeypatch.setattr(P, "provider_library_error", lambda provider: "libcublasLt.so.13: cannot open")
    P.cuda_status.cache_clear()
    try:
        make_placement(["cpu"], threads=1)
        assert calls == []  # the CPU alone: no CUDA loading at all
        assert P.cuda_status() == (False, "libcublasLt.so.13: cannot open")
        assert P.cuda_status() == (False, "libcublasLt.so.13: cannot open")
        assert calls == [1]
        assert capsys.readouterr().out == ""  # stdout may carry audio (say --stream --out -)
    finally:
        P.cuda_status.cache_clear()


def test_gpu_failure_at_session_start_is_a_provider_error():
    gpu = P.Placement((CUDA, CPU), 1, (CUDA, CPU))
    err = P.provider_error(RuntimeError("CUDA_PATH is set but CUDA wasnt able to be loaded"), gpu)
    assert isinstance(err, BarkOnnxError) and "--providers cpu" in str(err) and "CUDA 13" in str(err)
    assert P.provider_error(RuntimeError("Protobuf parsing failed"), gpu) is None
    assert P.provider_error(RuntimeError("CUDA error"), P.Placement((CPU,), 1, (CPU,))) is None


def test_install_check_names_both_extras(monkeypatch, caplog, tmp_path):
    from bark_onnx.runtime.sessions import install

    real = install.importlib.util.find_spec
    monkeypatch.setattr(install.importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(ImportError, match=r"bark-onnx\[cpu\].*bark-onnx\[gpu\]"):
        install.check_onnxruntime()
    monkeypatch.setattr(install.importlib.util, "find_spec", real)

    places = {"onnxruntime": tmp_path / "site", "onnxruntime-gpu": tmp_path / "site"}
    monkeypatch.setattr(install, "_location", places.get)
    with caplog.at_level(logging.WARNING, logger="bark_onnx.runtime.sessions.install"):
        install.check_onnxruntime()
    assert "both installed" in caplog.text and "pip uninstall -y onnxruntime onnxruntime-gpu" in caplog.text
    caplog.clear()
    places["onnxruntime-gpu"] = tmp_path / "gpu-first-on-the-path"  # one shadows the other: no conflict
    install.check_onnxruntime()
    assert not caplog.records


def test_cached_model_precision_follows_the_machine(gpu_build, tmp_path):
    from bark_onnx.runtime.model.cache import cached_model_dir, ensure_model, machine_precision

    gpu_build.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert machine_precision() == "fp16" and machine_precision(["cpu"]) == "int8"
    assert cached_model_dir(True).name == "suno--bark-small-fp16"
    assert cached_model_dir(False, providers=["cpu"]).name == "suno--bark-int8"
    target = cached_model_dir(True)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    assert ensure_model(True) == target  # already there: no export
    gpu_build.setattr(P, "cuda_status", lambda: (False, "no driver"))
    assert cached_model_dir(True).name == "suno--bark-small-int8"


def test_say_and_demo_pick_the_machine_precision(gpu_build, tmp_path):
    from bark_onnx.runtime import commands
    from bark_onnx.export import demo
    from bark_onnx.export.cli import run_demo_command

    seen = {}

    def fake_ensure(small, precision=None, progress=True, providers=None, offline=False, exporter=None):
        seen["say"] = (precision, providers)
        raise BarkOnnxError("stop here")

    gpu_build.setattr("bark_onnx.runtime.model.cache.ensure_model", fake_ensure)
    gpu_build.setattr(demo, "run_demo", lambda **kw: seen.setdefault("demo", kw["precision"]) and 0)
    with pytest.raises(BarkOnnxError, match="stop here"):
        commands._load(None, "cuda,cpu", None, True)
    assert seen["say"] == (None, ("cuda", "cpu"))  # ensure_model resolves None with these providers
    args = commands.argparse.Namespace(size="tiny", precision=None, seconds=1.0, out=None, providers=None,
                                       threads=None, silent=True)
    run_demo_command(args)
    assert seen["demo"] == "fp16"


def test_provider_names_from_a_command_line_or_a_config():
    from bark_onnx.runtime.sessions.providers import provider_names

    assert provider_names("cuda, cpu") == ("cuda", "cpu")
    assert provider_names(["cuda", " cpu "]) == ("cuda", "cpu")
    assert provider_names(None) is None and provider_names("") is None and provider_names(" , ") is None
