"""int8 and int4 exports: int8 tables with a scale per row, sizes that match the arithmetic,
rows of a batch computed independently, graphs that load and generate."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bark_onnx.runtime.model.config import ModelConfig

from .conftest import MODELS


@pytest.fixture(scope="module")
def quantized_dirs(checkpoints, tmp_path_factory):
    """{(model name, precision): model directory}."""
    from bark_onnx.export.exporter import export_model

    root = tmp_path_factory.mktemp("quantized")
    wanted = [("suno-tiny", "int8"), ("hf-mini", "int8"), ("suno-tiny", "int4")]
    return {(name, p): export_model(str(checkpoints[name]), root / f"{name}-{p}", precision=p,
                                    kv_cache=MODELS[name][3], progress=False, report=lambda line: None)
            for name, p in wanted}


def _initializers(path, stored: bool = False) -> dict[str, np.ndarray]:
    """A graph's weights as stored, or (default) as ONNX Runtime sees them once the fp16-stored
    ones are cast back (`<name>_fp16` -> `<name>`, fp32)."""
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    if stored:
        return weights
    return {n.removesuffix("_fp16"): w.astype(np.float32) if n.endswith("_fp16") else w for n, w in weights.items()}


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_tables_are_int8_with_a_scale_per_row(precision, quantized_dirs, model_dirs):
    """Every embedding table (and the fine heads, which slice its rows) is int8, within half a step
    of the fp32 table, with the scale max|row| / 127 (an fp16 value); nothing reads the fp32 tables."""
    path = quantized_dirs[("suno-tiny", precision)]
    fp32 = model_dirs["suno-tiny"]
    for graph, tables in (("semantic", ["wte.weight", "wpe.weight"]), ("coarse", ["wte.weight", "wpe.weight"]),
                          ("fine", ["wtes.weight", "wpe.weight"])):
        weights, reference = _initializers(path / f"{graph}.onnx"), _initializers(fp32 / f"{graph}.onnx")
        for name in tables:
            q, scale, w = weights[f"{name}_int8"], weights[f"{name}_scale"], reference[name]
            assert name not in weights
            assert q.dtype == np.int8 and q.shape == w.shape and scale.shape == (w.shape[0], 1)
            np.testing.assert_array_equal(scale[:, 0], (np.abs(w).max(1) / 127).astype(np.float16))
            assert np.all(np.abs(q * scale - w) <= scale / 2 * (1 + 1e-5) + 1e-12)
    semantic = _initializers(path / "semantic.onnx")
    assert not semantic["wte.weight_int8"][-1].any()  # the merge_none row stays exactly zero


def _expected_bytes(cfg, vocab_rows: int, head_columns: int, norm_bias: bool) -> tuple[int, int]:
    """(int8 bytes, floating point elements) of a GPT graph in the int8 export, from its shapes."""
    L, D = cfg.n_layer, cfg.n_embd
    matmul = L * (3 * D * D + D * D + 4 * D * D + 4 * D * D) + D * head_columns
    int8 = vocab_rows * D + cfg.block_size * D + matmul
    scales = vocab_rows + cfg.block_size  # a scale per table row (a weight has one scale)
    norms = (2 * L + 1) * D * (2 if norm_bias else 1)
    biases = L * (3 * D + D + 4 * D + D) if cfg.bias else 0
    return int8, scales + norms + biases


@pytest.mark.parametrize("name", list(MODELS))
def test_int8_size_is_the_arithmetic(name, quantized_dirs):
    """int8 tables and weights; scales, norms and biases in floating point: nothing else is stored."""
    path = quantized_dirs[(name, "int8")]
    config = ModelConfig.load(path)
    fine = config.fine
    expected = {
        "semantic": _expected_bytes(config.semantic, config.semantic.input_vocab_size + 1, 10_001,
                                    config.semantic.bias),
        "coarse": _expected_bytes(config.coarse, config.coarse.input_vocab_size, 2048, config.coarse.bias),
        "fine": _expected_bytes(fine, fine.n_codes_total * fine.input_vocab_size, 0, True),  # LayerNorm bias always
    }
    for graph, (int8, floats) in expected.items():
        floats += len(getattr(config.graphs[graph], "bands", ())) * config.graphs[graph].logits_size  # draw masks
        weights, stored = _initializers(path / f"{graph}.onnx"), _initializers(path / f"{graph}.onnx", stored=True)
        assert sum(w.nbytes for w in weights.values() if w.dtype == np.int8) == int8, graph
        assert sum(w.size for w in weights.values() if w.dtype == np.float32 and w.size > 1) == floats, graph
        # floating point weights of 1024 elements or more are stored in fp16, smaller ones in fp32
        assert all(w.dtype == np.float16 for w in stored.values() if w.dtype.kind == "f" and w.size >= 1024), graph
        size = int8 + sum(w.nbytes for w in stored.values() if w.dtype.kind == "f" and w.size > 1)
        disk = (path / f"{graph}.onnx").stat().st_size + (path / f"{graph}.onnx.data").stat().st_size
        assert size <= disk <= size + 200_000, graph  # plus the graph itself and the small constants
    codec = _initializers(path / "codec.onnx", stored=True)
    assert {w.dtype for w in codec.values() if w.size >= 1024} == {np.dtype(np.float16)}


def _rows_alone_and_together(tts, seed: int = 0) -> None:
    """Logits of a batch of 3 rows equal, bit for bit, those of each row run alone."""
    rng = np.random.default_rng(seed)
    for decoder, vocab in ((tts.decoders["semantic"], 10_000), (tts.decoders["coarse"], 12_048)):
        prompt = rng.integers(0, vocab, (3, 20))
        steps = [rng.integers(0, vocab, 3) for _ in range(4)]
        seqs = [decoder.open() for _ in range(3)]
        together = [decoder.prefill(seqs, prompt).logits] + [decoder.step(seqs, s).logits for s in steps]
        for seq in seqs:
            decoder.close(seq)
        for row in range(3):
            seq = decoder.open()
            alone = [decoder.prefill([seq], prompt[row:row + 1]).logits] + [decoder.step([seq], s[row:row + 1]).logits
                                                                   for s in steps]
            decoder.close(seq)
            for a, b in zip(alone, together):
                np.testing.assert_array_equal(a[0], b[row])
    codes = rng.integers(0, 1024, (3, 50, 8))
    for pred_idx in (2, 7):
        run = lambda c: tts.sessions["fine"].run(["logits"], {  # noqa: E731
            "codes": c, "pred_idx": np.array(pred_idx), "temperature": np.zeros(len(c), np.float32),
            "uniform": np.zeros(c.shape[:2], np.float32)})[0]
        together = run(codes)
        for row in range(3):
            np.testing.assert_array_equal(run(codes[row:row + 1])[0], together[row])


@pytest.mark.parametrize("name", list(MODELS))
def test_int8_rows_are_independent(name, quantized_dirs):
    from bark_onnx import Bark

    _rows_alone_and_together(Bark.load(quantized_dirs[(name, "int8")]))


@pytest.mark.parametrize("name", list(MODELS))
def test_fp32_rows_are_independent(name, tts):
    _rows_alone_and_together(tts[name])


@pytest.mark.parametrize("key", [("suno-tiny", "int8"), ("hf-mini", "int8"), ("suno-tiny", "int4")])
def test_quantized_graphs_load_and_generate(key, quantized_dirs, tts):
    from bark_onnx import Bark

    t = Bark.load(quantized_dirs[key])
    assert t.config.precision == key[1]
    prompt, audio = t.generate("hello world", seed=0, silent=True, output_full=True)
    assert audio.dtype == np.float32 and np.isfinite(audio).all() and audio.size > 0
    assert len(audio) == prompt["fine_prompt"].shape[1] * 320
    # greedy decoding mostly agrees with fp32 on the first tokens (random weights: flat logits)
    fp32 = tts[key[0]]
    a = t.text_to_semantic("hello world", temperature=0, max_gen_duration_s=0.5, silent=True)
    b = fp32.text_to_semantic("hello world", temperature=0, max_gen_duration_s=0.5, silent=True)
    assert len(a) and a[0] == b[0]


def _one_matmul(w: np.ndarray, declare: bool) -> onnx.ModelProto:
    k, n = w.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="/mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", n])], [numpy_helper.from_array(w, "w")],
        value_info=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", k])] if declare else [])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    return model


def test_int8_matmul_is_the_integer_arithmetic():
    """y = a_row * w_scale * (round(x / a_row) @ q): the graph computes exactly that (to float
    rounding), a zero row gives zeros, and a MatMul whose input is not declared 2-D stays fp32."""
    import onnxruntime as ort

    from bark_onnx.kernels.quantize import int8_matmuls, symmetric_int8

    rng = np.random.default_rng(0)
    w = rng.standard_normal((48, 24)).astype(np.float32)
    x = rng.standard_normal((5, 48)).astype(np.float32)
    x[2] = 0
    model = _one_matmul(w, declare=True)
    assert int8_matmuls(model.graph) == 1
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    q, scale = symmetric_int8(w, axis=None)
    a = np.abs(x).max(1, keepdims=True) / 127
    xq = np.round(x / np.where(a > 0, a, 1))
    np.testing.assert_allclose(y, (xq @ q.astype(np.float64)) * a * scale, rtol=1e-5, atol=1e-6)
    assert not y[2].any()
    np.testing.assert_allclose(y, x @ w, atol=0.02 * np.abs(x @ w).max())
    assert int8_matmuls(_one_matmul(w, declare=False).graph) == 0


def test_int8_requests_among_others_equal_their_solo_results(quantized_dirs):
    """The engine's batched steps on an int8 export: each request's tokens and audio as when run alone."""
    from concurrent.futures import ThreadPoolExecutor

    from bark_onnx import Bark

    from .test_engine import REQUESTS, _equal

    tts = Bark.load(quantized_dirs[("suno-tiny", "int8")], max_batch=4)
    solo = [tts.synthesize(text, voice, seed=seed, silent=True, **kw) for text, voice, seed, kw in REQUESTS]
    with ThreadPoolExecutor(len(REQUESTS)) as pool:
        together = list(pool.map(lambda r: tts.synthesize(r[0], r[1], seed=r[2], silent=True, **r[3]), REQUESTS))
    assert all(_equal(a, b) for a, b in zip(solo, together))
    tts.close()
