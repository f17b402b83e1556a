"""Tokens drawn where the logits are: the runs' bookkeeping in bulk, the host path, neighbours, cancellation."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from bark_onnx import Bark, CancelledError, InputError, Request
from bark_onnx.kernels.sampling import draw_rows, sample, uniforms
from bark_onnx.runtime.engine.decoder import Out
from bark_onnx.runtime.engine.executor import CODEC_BATCH_FRAMES
from bark_onnx.runtime.engine.runs import Runs
from bark_onnx.runtime.stages.semantic import EOS, semantic_history
from bark_onnx.runtime.stages.work import Generate

WIDTH = 10_001
BANDS = ((0, WIDTH), (0, WIDTH - 1))


def _item(max_new, temperature, seed, band=0, eos=EOS, min_eos_p=None, top_k=None):
    rng = np.random.default_rng(seed)
    return Generate("semantic", np.zeros(3, np.int64), max_new, temperature, uniforms(rng, max_new, temperature),
                    np.full(max_new, band), eos=eos, min_eos_p=min_eos_p, top_k=top_k)


def _script(seed):
    """Logits per draw: flat, with EOS rising after a few draws (a different speed per script)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(40, WIDTH)).astype(np.float32)
    base[:, EOS] = np.linspace(-4, 16 + seed, 40)
    return base


def _run(runs: Runs, items: dict[int, Generate], scripts: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Drive runs on their rows together, each step's logits from the row's script; returns each row's tokens."""
    done = {}
    for row, item in items.items():
        runs.begin(row, row, item)
    rows = np.array(sorted(items))
    draw = runs.draws(rows)
    while rows.size:
        logits = np.stack([scripts[r][runs.n[r]] for r in rows])
        tokens, eos_p = draw_rows(logits, draw.temperature, draw.uniform, runs.ranges[draw.band], runs.eos_column)
        for owner, got, _ in runs.settle(rows, Out(tokens, eos_p, lambda: logits), draw):
            done[owner] = got
        rows = runs.stepping()
        draw = runs.draws(rows)
    return done


def test_stop_rules_checked_in_bulk_equal_each_run_alone():
    """Rows with other stop rules (EOS, min_eos_p, a token limit, early stop off, greedy, top-k on the
    host) settled together give what each gives alone."""
    decoder = SimpleNamespace(max_rows=6, max_len=1024, has_eos=True,
                              info=SimpleNamespace(logits_start=0, logits_size=WIDTH, bands=BANDS))
    items = {0: _item(30, 0.8, 0), 1: _item(30, 0.8, 1, min_eos_p=0.05), 2: _item(7, 0.8, 2),
             3: _item(30, 0.8, 3, band=1, eos=None), 4: _item(30, None, 4), 5: _item(30, 0.8, 5, top_k=20)}
    scripts = {row: _script(row) for row in items}
    scripts[1] = scripts[0]  # the same logits: only min_eos_p tells rows 0 and 1 apart
    together = _run(Runs(decoder), items, scripts)
    for row, item in items.items():
        alone = _run(Runs(decoder), {row: _item(item.max_new, item.temperature, row, int(item.bands[0]), item.eos,
                                                item.min_eos_p, item.top_k)}, {row: scripts[row]})
        np.testing.assert_array_equal(together[row], alone[row])
    assert len(together[2]) == 7 and len(together[3]) == 30  # a limit; no early stop at all
    assert len(together[1]) < len(together[0])  # min_eos_p stops before EOS is drawn
    assert (together[3] < EOS).all()  # early stop off: EOS is never drawn


def _host_semantic(t: Bark, text: str, seed: int, top_k: int, temperature: float = 0.7, n: int = 40):
    """Bark's loop by hand on the decoder's raw logits: kernels' float64 `sample` with the request's uniforms."""
    from bark_onnx.runtime.constants import SEMANTIC_INFER_TOKEN

    dec = t.decoders["semantic"]
    u = uniforms(np.random.default_rng(seed), n, temperature)
    seq = dec.open()
    try:
        logits = dec.prefill([seq], np.append(t.text.encode(text), SEMANTIC_INFER_TOKEN)[None],
                             [semantic_history(None)]).logits  # greedy draw: raw logits
        tokens = []
        for k in range(n):
            token, probs = sample(logits, temperature, u[k:k + 1], top_k=top_k)
            if token[0] == EOS or probs[0, EOS] >= 0.2:
                break
            tokens.append(int(token[0]))
            logits = dec.step([seq], token).logits
        return np.array(tokens)
    finally:
        dec.close(seq)


def test_top_k_rows_draw_on_the_host_from_raw_logits(tts):
    """A top-k request draws Bark's float64 way from the graph's raw logits with its own uniforms."""
    t = tts["suno-tiny"]
    got = t.text_to_semantic("hello world", seed=11, top_k=30, max_gen_duration_s=(40 - 0.5) / 49.9, silent=True)
    want = _host_semantic(t, "hello world", 11, top_k=30)
    np.testing.assert_array_equal(got, want)


REQUESTS = [  # eight at once: greedy and sampled, top-k and top-p, voices, early stop on and off
    ("hello world", None, 0, dict(max_gen_duration_s=1.0)),
    ("this is a test voice", "announcer", 1, dict(max_gen_duration_s=0.8, text_temperature=0, waveform_temperature=0,
                                                   fine_temperature=0)),
    ("hi", "v2/en_speaker_0", 2, dict(max_gen_duration_s=1.2, top_k=40)),
    ("good bad yes no", None, 3, dict(max_gen_duration_s=0.6, top_p=0.9)),
    ("the music", "announcer", 4, dict(max_gen_duration_s=1.0, allow_early_stop=False)),
    ("my name is Bark", "v2/en_speaker_1", 5, dict(max_gen_duration_s=1.4, min_eos_p=0.01)),
    ("one two", None, 6, dict(max_gen_duration_s=0.9, fine_temperature=1.3)),
    ("last one", "announcer", 7, dict(max_gen_duration_s=0.7, text_temperature=1.1)),
]


def test_a_request_alone_equals_itself_among_seven_others(model_dirs):
    tts = Bark.load(model_dirs["suno-tiny"], max_batch=8)
    try:
        requests = [Request.make(text, voice, seed=seed, **kw) for text, voice, seed, kw in REQUESTS]
        alone = [tts.submit(r).result(timeout=300) for r in requests]
        jobs = [tts.submit(r) for r in requests]
        together = [job.result(timeout=300) for job in jobs]
        for a, b in zip(alone, together):
            for field in ("semantic", "coarse", "fine", "audio"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        assert tts.stats()["rows_in_use"] == 0
    finally:
        tts.close()


def _run_by_hand(tts, requests) -> list:
    """Submit the requests at once to a model loaded with background=False, step it until all end."""
    jobs = [tts.submit(r) for r in requests]
    while tts.step():
        pass
    return [job.result(0) for job in jobs]


def _equal_results(a, b, fields=("semantic", "coarse", "fine", "audio")) -> None:
    for field in fields:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def test_cancel_in_the_middle_of_a_batched_run(model_dirs):
    """Three semantic runs step together; the middle one is cancelled mid-run: its rows are free at the next
    step, and the others end as they would alone."""
    requests = [Request.make(f"run number {i}", seed=i, allow_early_stop=False, max_gen_duration_s=1.5)
                for i in range(3)]
    tts = Bark.load(model_dirs["suno-tiny"], max_batch=4, background=False)
    try:
        alone = [_run_by_hand(tts, [r])[0] for r in requests]
        jobs = [tts.submit(r) for r in requests]
        runs = tts.engine.executor.runs["semantic"]
        for _ in range(10):
            tts.step()
        assert runs.active.sum() == 3 and (runs.n[runs.active] > 5).all()  # all three mid-run
        jobs[1].cancel()
        tts.step()
        with pytest.raises(CancelledError):
            jobs[1].result(0)
        assert runs.active.sum() == 2 and tts.decoders["semantic"].rows_in_use == 2
        while tts.step():
            pass
        for i in (0, 2):
            _equal_results(jobs[i].result(0), alone[i])
        assert tts.stats()["rows_in_use"] == 0
    finally:
        tts.close()


def test_a_call_s_logits_stay_its_own_after_later_calls_on_its_binding(tts):
    """An Out read after the same rows' next call (a one-row prefill, then a step of that row: one
    binding) gives its own call's logits, not the later call's."""
    dec = tts["suno-tiny"].decoders["coarse"]
    prompt = np.arange(40)[None] % 1000
    seq = dec.open()
    try:
        own = dec.prefill([seq], prompt).logits.copy()  # read at once
        dec.close(seq)
        seq = dec.open()  # the same row, nothing kept: the same arithmetic
        first = dec.prefill([seq], prompt)  # not read yet
        second = dec.step([seq], [7])
        np.testing.assert_array_equal(first.logits, own)
        assert not np.allclose(second.logits, own)
    finally:
        dec.close(seq)


def test_grouped_host_drawn_prefills_equal_their_solo_runs(model_dirs):
    """top-k and top-p requests of one length: their coarse windows (each keeping the prefix it shares with
    the last, so one call each) start in the same rounds, and each reads its own call's logits."""
    same = dict(allow_early_stop=False, max_gen_duration_s=2.0)
    requests = [Request.make("one two three", voice, seed=seed, **same, **kw)
                for voice, seed, kw in ((None, 0, dict(top_k=30)), ("announcer", 1, dict(top_p=0.9)),
                                        (None, 2, dict(top_k=5, top_p=0.5)))]
    tts = Bark.load(model_dirs["suno-tiny"], max_batch=4, background=False)
    calls = []
    decoder = tts.decoders["coarse"]
    prefill = decoder.prefill
    decoder.prefill = lambda seqs, *a, **k: calls.append(len(seqs)) or prefill(seqs, *a, **k)
    try:
        alone = [_run_by_hand(tts, [r])[0] for r in requests]
        calls.clear()
        for a, b in zip(alone, _run_by_hand(tts, requests)):
            _equal_results(a, b)
        assert max(calls) >= 2  # windows of several requests were prefilled as one group
    finally:
        tts.close()


class _Calls:
    """A session that records the batch size of each call."""

    def __init__(self, session):
        self.session, self.batches = session, []

    def run(self, names, feed):
        self.batches.append(len(feed["codes"]))
        return self.session.run(names, feed)


def _spied(tts):
    executor = tts.engine.executor
    executor.fine, executor.codec = _Calls(executor.fine), _Calls(executor.codec)
    return executor


def test_fine_windows_and_codec_chunks_batched_at_a_fixed_shape(model_dirs):
    """fine_batch and codec_batch 3: fine passes and decodes of one shape share calls, always of 3 rows;
    each request's tokens and audio equal its run alone, and its fine tokens equal one-call-a-window runs."""
    same = dict(allow_early_stop=False, max_gen_duration_s=0.8)  # one length: windows of one shape
    requests = [Request.make("one two three", voice, seed=seed, **same)
                for voice, seed in ((None, 0), ("announcer", 1), (None, 2), ("v2/en_speaker_0", 3), (None, 4))]
    requests.append(Request.make("a stream beside them", seed=5, stream=True, **same))
    plain = Bark.load(model_dirs["suno-tiny"], max_batch=8, fine_batch=1, codec_batch=1)
    tts = Bark.load(model_dirs["suno-tiny"], max_batch=8, fine_batch=3, codec_batch=3, background=False)
    try:
        batched, one_a_call = _spied(tts), _spied(plain)
        alone = [_run_by_hand(tts, [r])[0] for r in requests]
        assert set(batched.fine.batches) == {3} and set(batched.codec.batches) == {3}  # alone: padded
        separate = [plain.submit(r).result(timeout=300) for r in requests]
        batched.fine.batches.clear(), batched.codec.batches.clear()
        # all six in flight from the first round: those of one shape reach their windows together
        together = _run_by_hand(tts, requests)
        for a, b, c in zip(alone, together, separate):
            _equal_results(a, b)
            np.testing.assert_array_equal(a.fine, c.fine)  # a fine row's arithmetic is its own on the CPU
            np.testing.assert_allclose(a.audio, c.audio, atol=1e-5)
        assert set(one_a_call.fine.batches) == {1} and set(one_a_call.codec.batches) == {1}
        assert set(batched.fine.batches) == {3} and set(batched.codec.batches) == {3}
        for kind in ("fine", "codec"):  # the three voiceless one-shot requests shared their calls
            assert len(getattr(batched, kind).batches) <= len(getattr(one_a_call, kind).batches) - 2
    finally:
        tts.close()
        plain.close()


def test_batches_must_be_positive_integers(model_dirs):
    for bad in (dict(fine_batch=0), dict(codec_batch=-1), dict(codec_batch=2.0), dict(fine_batch=True)):
        with pytest.raises(InputError, match=next(iter(bad))):
            Bark.load(model_dirs["suno-tiny"], **bad)


def test_a_long_decode_runs_alone_and_unpadded(model_dirs):
    """A one-shot request's whole decode (longer than a stream's chunk) neither shares nor pads a call;
    a stream's chunks do. On the CPU both run one a call by default."""
    tts = Bark.load(model_dirs["suno-tiny"], codec_batch=2)
    default = Bark.load(model_dirs["suno-tiny"])
    try:
        assert (default.engine.executor.fine_batch, default.engine.executor.codec_batch) == (1, 1)
        executor = _spied(tts)
        frames = CODEC_BATCH_FRAMES + 40
        kw = dict(allow_early_stop=False, max_gen_duration_s=frames / 75, seed=1)
        assert tts.generate("a long one", **kw).size > CODEC_BATCH_FRAMES * 320
        assert executor.codec.batches == [1]
        tts.stream("a long one", **kw).result(timeout=300)
        assert len(executor.codec.batches) > 2 and set(executor.codec.batches[1:]) == {2}
    finally:
        tts.close()
        default.close()
