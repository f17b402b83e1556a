"""Sampling kernels against a direct transcription of Bark's torch code, over shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bark_onnx.kernels import sampling as S


def bark_filter(logits: np.ndarray, top_k=None, top_p=None) -> np.ndarray:
    """Bark's own filtering (generation.py), row by row."""
    out = []
    for row in logits:
        relevant = row.astype(np.float64).copy()
        if top_p is not None:
            order = np.argsort(relevant)[::-1]
            cum = np.cumsum(F.softmax(torch.from_numpy(relevant[order]), dim=-1).numpy())
            remove = cum > top_p
            remove[1:] = remove[:-1].copy()
            remove[0] = False
            relevant[order[remove]] = -np.inf
        if top_k is not None:
            t = torch.from_numpy(relevant)
            v, _ = torch.topk(t, min(top_k, t.size(-1)))
            t[t < v[-1]] = -float("inf")
            relevant = t.numpy()
        out.append(relevant)
    return np.stack(out)


@pytest.mark.parametrize("shape", [(1, 10), (3, 1024), (2, 10_001)])
@pytest.mark.parametrize("top_k,top_p", [(None, None), (5, None), (None, 0.5), (50, 0.9), (1, None), (None, 1.0)])
def test_filters_match_bark(shape, top_k, top_p):
    logits = np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32) * 3
    got = S.filter_logits(logits, top_k, top_p)
    np.testing.assert_array_equal(np.isinf(got), np.isinf(bark_filter(logits, top_k, top_p)))
    np.testing.assert_allclose(got[np.isfinite(got)], logits[np.isfinite(got)], rtol=1e-6)


def test_top_p_keeps_the_token_that_crosses():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    kept = np.isfinite(S.top_p_filter(logits, 0.6))
    assert kept.tolist() == [[True, True, False, False]]


def test_greedy_is_argmax_with_one_hot_probs():
    logits = np.random.default_rng(0).normal(size=(4, 300))
    for temp in (0, None):
        tokens, probs = S.sample(logits, temp, None)
        np.testing.assert_array_equal(tokens, logits.argmax(-1))
        assert (probs.sum(-1) == 1).all() and (probs[np.arange(4), tokens] == 1).all()


def _tv(draws, probs) -> float:
    """Total variation distance between the draws' frequencies and the probabilities."""
    return 0.5 * float(np.abs(np.bincount(draws, minlength=len(probs)) / len(draws) - probs).sum())


def test_draws_follow_softmax_of_logits_over_temperature():
    logits = np.array([[2.0, 1.0, 0.0, -1.0, -np.inf]])
    n = 40_000
    expected = S.softmax(logits / 0.7)[0]
    host = S.sample(np.repeat(logits, n, 0), 0.7, np.random.default_rng(1).random(n))[0]
    device, _ = S.draw_rows(np.repeat(logits, n, 0), np.full(n, 0.7), np.random.default_rng(1).random(n))
    for draws in (host, device):
        assert (draws != 4).all() and _tv(draws, expected) < 0.01


@pytest.mark.parametrize("width,band", [(10_001, (0, 10_001)), (10_001, (0, 10_000)), (2048, (1024, 2048)),
                                        (1024, None)])
def test_float32_draws_keep_bark_s_distribution_and_band(width, band):
    """The graphs' rule (draw_rows): every draw inside the band, frequencies of the tempered softmax
    over the band's columns (total variation), P(EOS) that softmax's."""
    rng = np.random.default_rng(width)
    row = rng.normal(size=width).astype(np.float32) * 2
    row[rng.choice(width, 8, replace=False)] += 6  # a few likely tokens, as a trained model has
    n = 20_000
    lo, hi = band or (0, width)
    tokens, eos_p = S.draw_rows(np.tile(row, (n, 1)), np.full(n, 0.8), rng.random(n),
                                None if band is None else np.tile(band, (n, 1)), eos=lo)
    assert ((tokens >= lo) & (tokens < hi)).all()
    expected = S.softmax(row[lo:hi].astype(np.float64) / 0.8)
    # total variation over the likely tokens one by one and the rest as one (more bins only add noise)
    top = np.argsort(expected)[::-1][:8]
    bins = np.full(hi - lo, 8)
    bins[top] = np.arange(8)
    coarse = np.bincount(bins, weights=expected, minlength=9)
    assert _tv(bins[tokens - lo], coarse) < 0.015
    np.testing.assert_allclose(eos_p, expected[0], rtol=1e-4)


def test_float32_draws_against_the_float64_rule():
    """The same uniform numbers give the host's float64 token but where the two round a CDF edge apart."""
    rng = np.random.default_rng(3)
    logits = (rng.normal(size=(2000, 1024)) * 3).astype(np.float32)
    u = rng.random(2000)
    host = S.sample(logits, 0.7, u)[0]
    device, _ = S.draw_rows(logits, np.full(2000, 0.7), u)
    assert (host != device).mean() < 0.002


def test_greedy_rows_and_sampled_rows_side_by_side():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(6, 300)).astype(np.float32)
    t = np.array([0, 0.7, 0, 1.3, 0, 0.2], np.float32)
    band = np.tile([10, 250], (6, 1))
    tokens, eos_p = S.draw_rows(logits, t, rng.random(6), band, eos=10)
    greedy = t == 0
    np.testing.assert_array_equal(tokens[greedy], 10 + logits[greedy, 10:250].argmax(-1))
    np.testing.assert_array_equal(eos_p[greedy], (tokens[greedy] == 10).astype(np.float32))
    assert ((tokens >= 10) & (tokens < 250)).all()


def test_a_row_draws_alone_what_it_draws_among_others():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(5, 10_001)).astype(np.float32)
    t, u = np.full(5, 0.7, np.float32), rng.random(5)
    together, p_together = S.draw_rows(logits, t, u, eos=10_000)
    for i in range(5):
        alone, p_alone = S.draw_rows(logits[i:i + 1], t[i:i + 1], u[i:i + 1], eos=10_000)
        assert alone[0] == together[i] and p_alone[0] == p_together[i]


def test_seeded_uniforms_repeat_one_per_draw():
    a = S.uniforms(np.random.default_rng(7), 5, 0.7)
    rng = np.random.default_rng(7)
    np.testing.assert_array_equal(a, [rng.random() for _ in range(5)])  # n draws, or one at a time: the same
    assert S.uniforms(np.random.default_rng(7), 5, 0) is None and S.uniforms(None, 5, None) is None
    with pytest.raises(ValueError, match="random generator"):
        S.uniforms(None, 3, 0.7)


def test_seeded_steps_repeat_and_sample_their_rows_alone():
    """`sample` (one uniform number per row): the same numbers give the same tokens, and a row's token
    and probabilities do not depend on the rows drawn beside it (other logits, other filters' effect)."""
    logits = np.random.default_rng(0).normal(size=(3, 10_000))
    for seed in range(20):
        u = np.random.default_rng(seed).random(2)
        alone, p_alone = S.sample(logits[:1], 0.7, u[:1])
        beside, p_beside = S.sample(np.vstack([logits[:1], 50 * logits[1:2]]), 0.7, u)
        assert beside[0] == alone[0]
        np.testing.assert_array_equal(p_beside[0], p_alone[0])
    tokens = S.sample(logits, 0.7, np.random.default_rng(5).random(3), top_k=50)[0]
    kth = np.sort(logits, axis=-1)[:, -50][:, None]
    assert (logits[np.arange(3), tokens] >= kth[:, 0]).all()  # only top-k tokens are drawn


def test_inverse_cdf_never_draws_a_zero_probability_token():
    probs = np.array([[0.0, 0.5, 0.0, 0.5, 0.0]] * 20_000)
    draws = S.inverse_cdf(probs, np.random.default_rng(2).random(20_000))
    assert set(np.unique(draws)) == {1, 3} and abs((draws == 1).mean() - 0.5) < 0.02
    edge, _ = S.draw_rows(np.log(probs[:3] + 1e-45).astype(np.float32), np.ones(3), [0.0, 0.5, 1.0 - 1e-17])
    assert set(edge.tolist()) <= {1, 3}  # u = 0 and u just under 1 (1 in float32) stay on tokens of mass


def test_sampling_without_uniforms_is_refused():
    with pytest.raises(ValueError, match="uniform"):
        S.sample(np.zeros((1, 3)), 0.7, None)


def test_a_temperature_past_float32_draws_evenly_without_a_warning():
    import warnings

    logits = np.tile(np.array([[8.0, 0.0, -8.0, 0.0]], np.float32), (40_000, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow in the float32 cast would raise here
        t = np.full(len(logits), S.graph_temperature(1e300))
        draws, _ = S.draw_rows(logits, t, np.random.default_rng(0).random(len(logits)))
    counts = np.bincount(draws, minlength=4) / len(draws)
    assert np.abs(counts - 0.25).max() < 0.02  # the T -> inf limit: every token as likely
    assert S.graph_temperature(1e-40) == 0 and S.graph_temperature(None) == 0  # greedy


@pytest.mark.parametrize("rows,width,band", [(1, 10, False), (7, 1024, True), (3, 10_001, True), (64, 2048, True),
                                             (5, 1023, True)])
def test_the_graph_draw_equals_the_numpy_reference(rows, width, band):
    """export/sampling_head.py's ONNX ops give draw_rows' tokens and P(EOS), over shapes (block shapes
    73 x 137, 32 x 64, and 31 x 33), greedy and sampled rows, bands, and uniform numbers at the edges
    (0, and just under 1)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto

    from bark_onnx.export.onnx_builder import OPSET, GraphBuilder
    from bark_onnx.export.sampling_head import draw_head

    rng = np.random.default_rng(rows * width)
    ranges = ((0, width), (0, width - 1), (width // 3, width // 3 + 7), (width - 1, width)) if band else ()
    g = GraphBuilder("draw")
    logits = g.input("logits", TensorProto.FLOAT, ["rows", width])
    t = g.input("temperature", TensorProto.FLOAT, ["rows"])
    u = g.input("uniform", TensorProto.FLOAT, ["rows"])
    b = g.input("band", TensorProto.INT64, ["rows"]) if band else None
    token, eos_p = draw_head(g, logits, width, t, u, b, ranges, eos=min(5, width - 1))
    g.op("Identity", [token], "/out/token", outputs=["token"])
    g.op("Identity", [eos_p], "/out/eos", outputs=["eos_p"])
    g.output("token", TensorProto.INT64, ["rows"])
    g.output("eos_p", TensorProto.FLOAT, ["rows"])
    model = g.model(OPSET)
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for trial in range(5):
        x = (rng.normal(size=(rows, width)) * (1 + 3 * trial)).astype(np.float32)
        temps = rng.choice(np.array([0, 0.3, 0.7, 1.5], np.float32), rows)
        us = S.as_float32_uniform(np.concatenate([[0.0, 1 - 1e-12], rng.random(rows)])[:rows])
        feed = {"logits": x, "temperature": temps, "uniform": us}
        columns = None
        if band:
            index = rng.integers(0, len(ranges), rows)
            feed["band"], columns = index, np.array(ranges)[index]
        feed["logits"] = x / np.where(temps > 0, temps, np.float32(1))[:, None]  # the graphs scale before the head
        got_token, got_eos = session.run(None, feed)
        want_token, want_eos = S.draw_rows(x, temps, us, columns, eos=min(5, width - 1))
        assert (got_token != want_token).mean() <= 0.01  # a float32 CDF edge may fall either way
        np.testing.assert_array_equal(got_token[temps == 0], want_token[temps == 0])
        if band:
            assert ((got_token >= columns[:, 0]) & (got_token < columns[:, 1])).all()
        np.testing.assert_allclose(got_eos, want_eos, rtol=1e-4, atol=1e-7)


def test_block_shapes():
    assert S.block_shape(10_001) == (73, 137) and S.block_shape(2048) == (32, 64) and S.block_shape(1024) == (32, 32)
    assert S.block_shape(7) == (1, 7)  # a prime: one block


# The 256 largest float32 values below 1, and 0: where rounding puts u * total at or past a cumulative sum.
EDGE_UNIFORMS = np.concatenate([[0.0], 1 - np.arange(1, 257) * 2.0 ** -24]).astype(np.float32)


def _draw_graph(width: int, bands):
    """export/sampling_head.py's draw as a session of its own: (logits over T, T, u, band) -> token."""
    import onnxruntime as ort
    from onnx import TensorProto

    from bark_onnx.export.onnx_builder import OPSET, GraphBuilder
    from bark_onnx.export.sampling_head import draw_head

    g = GraphBuilder("draw")
    logits = g.input("logits", TensorProto.FLOAT, ["rows", width])
    t = g.input("temperature", TensorProto.FLOAT, ["rows"])
    u = g.input("uniform", TensorProto.FLOAT, ["rows"])
    b = g.input("band", TensorProto.INT64, ["rows"]) if bands else None
    token, _ = draw_head(g, logits, width, t, u, b, bands)
    g.op("Identity", [token], "/out/token", outputs=["token"])
    g.output("token", TensorProto.INT64, ["rows"])
    return ort.InferenceSession(g.model(OPSET).SerializeToString(), providers=["CPUExecutionProvider"])


def _edge_logits(width: int, lo: int, hi: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(width + lo + hi)
    top_heavy = rng.normal(size=width).astype(np.float32)
    top_heavy[max(lo, hi - 300):hi] += 12  # most of the mass in the band's last columns
    peaked = np.full(width, -300, np.float32)
    peaked[(lo + hi) // 2] = 0  # every other column's probability is exactly 0
    return {"flat": np.zeros(width, np.float32), "peaked": peaked, "top-heavy": top_heavy,
            "top-heavy past the band": np.roll(top_heavy, 5)}  # mass also just outside it (EOS, codebook 1)


STAGE_DRAWS = [  # (stage, logits columns, the graph's bands): every band of every stage
    ("semantic", 10_001, ((0, 10_001), (0, 10_000))),
    ("coarse", 2048, ((0, 1024), (1024, 2048))),
    ("fine", 1024, ()),
]


@pytest.mark.parametrize("stage,width,bands", STAGE_DRAWS, ids=[s[0] for s in STAGE_DRAWS])
def test_a_draw_never_leaves_its_band_nor_takes_a_token_of_probability_zero(stage, width, bands):
    """At u = 0 and the 256 largest float32 values below 1, flat, peaked and top-heavy logits: the
    NumPy twin and the graph take the same token, inside the band and of probability > 0."""
    session = _draw_graph(width, bands)
    n = len(EDGE_UNIFORMS)
    for k, (lo, hi) in enumerate(bands or [(0, width)]):
        for kind, row in _edge_logits(width, lo, hi).items():
            for temperature in (1.3, 0.7):
                t = np.full(n, temperature, np.float32)
                x = np.tile(row, (n, 1))
                columns = np.tile([lo, hi], (n, 1)) if bands else None
                want, _ = S.draw_rows(x, t, EDGE_UNIFORMS, columns)
                z = np.where((np.arange(width) >= lo) & (np.arange(width) < hi), row / np.float32(temperature),
                             -np.inf).astype(np.float32)
                p = np.exp(z - z.max())  # the draw's float32 probabilities, up to their sum
                what = f"{stage} band {k} {kind} T={temperature}"
                assert ((want >= lo) & (want < hi)).all(), what
                assert (p[want] > 0).all(), what
                feed = {"logits": x / np.float32(temperature), "temperature": t, "uniform": EDGE_UNIFORMS}
                if bands:
                    feed["band"] = np.full(n, k, np.int64)
                np.testing.assert_array_equal(session.run(None, feed)[0], want, err_msg=what)
            if kind == "peaked":
                assert (want == (lo + hi) // 2).all()


def test_the_last_column_with_mass_bounds_a_scan():
    x = np.array([[0.5, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 2.0]], np.float32)
    np.testing.assert_array_equal(S.last_positive(x), [0, 0, 2])
    # u just under 1, all the mass before the band's end: the token the issue found (EOS, 10 000) never comes
    row = np.random.default_rng(0).normal(size=10_001).astype(np.float32)
    row[9_800:] += 12
    tokens, _ = S.draw_rows(np.tile(row, (64, 1)), np.full(64, 1.3), EDGE_UNIFORMS[1:65], np.tile([0, 10_000], (64, 1)))
    assert (tokens < 10_000).all()


@pytest.fixture(scope="module")
def fp16_model(checkpoints, tmp_path_factory):
    from bark_onnx.export.exporter import export_model

    return export_model(str(checkpoints["suno-tiny"]), tmp_path_factory.mktemp("fp16") / "model", precision="fp16",
                        progress=False, report=lambda line: None)


def _fp16_head(path, fine: bool):
    """The graph from the final LayerNorm's output to the logits over T, run by ONNX's reference
    evaluator, which computes fp16 as fp16, as a GPU does (ONNX Runtime's CPU kernels widen fp16 nodes
    to float32, so a session on the CPU provider never overflows there)."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(str(path))
    model.graph.value_info.append(onnx.helper.make_tensor_value_info("/ln_f/normed", onnx.TensorProto.FLOAT16, None))
    inputs = ["/ln_f/normed", "temperature"] + (["uniform", "pred_idx", "codes"] if fine else [])
    return ReferenceEvaluator(onnx.utils.Extractor(model).extract_model(inputs, ["logits"]))


TINY_TEMPERATURES = (2e-5, 1e-6, 1e-3)  # 1 / T past fp16's range; the logits over T past it


@pytest.mark.parametrize("graph", ["semantic", "fine"])
def test_fp16_graphs_draw_tiny_temperatures_as_greedy_without_nan(fp16_model, graph):
    fine = graph == "fine"
    head = _fp16_head(fp16_model / f"{graph}.onnx", fine)
    rows, width = 16, 64  # the tiny model's width
    h = np.random.default_rng(1).normal(size=(rows, width)).astype(np.float16)

    def run(t: float):
        feed = {"/ln_f/normed": h, "temperature": np.full(1 if fine else rows, t, np.float32)}
        if fine:
            feed.update(uniform=np.zeros((1, rows), np.float32), pred_idx=np.array(4),
                        codes=np.zeros((1, rows, 8), np.int64))  # only their shape is read
        logits = head.run(None, feed)[0].reshape(rows, -1)
        # the graph's draw of these logits over T (its twin's; u = 0.5: the token with most of the mass)
        return logits, S.draw_rows(logits, np.full(rows, 0.0 if t == 0 else 1.0, np.float32), np.full(rows, 0.5))[0]

    raw, greedy = run(0.0)
    h = (h * np.float16(100 / np.abs(raw).max())).astype(np.float16)  # raw logits up to 100: over 1e-3, 1e5
    raw, greedy = run(0.0)
    for t in TINY_TEMPERATURES:
        logits, token = run(t)
        assert np.isfinite(logits).all(), t
        np.testing.assert_allclose(logits * np.float32(t), raw, rtol=1e-3, atol=1e-3 * np.abs(raw).max())
        np.testing.assert_array_equal(token, greedy, err_msg=str(t))


def test_an_fp16_model_on_the_cpu_provider_samples_tiny_temperatures_as_greedy(fp16_model):
    from bark_onnx import Bark

    tts = Bark.load(fp16_model, providers=["cpu"])
    try:
        kw = dict(seed=0, max_gen_duration_s=0.4, silent=True)
        greedy = tts.text_to_semantic("hello world", temperature=0, **kw)
        tiny = TINY_TEMPERATURES[:2]  # the random model's logits lie within ~1: at 1e-3 it still samples
        for t in tiny:
            np.testing.assert_array_equal(tts.text_to_semantic("hello world", temperature=t, **kw), greedy)
        coarse = tts.semantic_to_coarse(greedy, temperature=0, seed=0, silent=True)
        fine = {t: tts.coarse_to_fine(coarse, temperature=t, seed=0) for t in (None, *tiny)}
        assert all(np.array_equal(f, fine[None]) for f in fine.values())
    finally:
        tts.close()
