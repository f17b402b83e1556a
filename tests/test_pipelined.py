"""A stream's stages pipelined: the coarse windows start while the semantic run goes on, with one-shot tokens."""

from __future__ import annotations

import numpy as np
import pytest

from bark_onnx import Bark, CancelledError, Request
from bark_onnx.runtime.engine.scheduler import FifoPolicy
from bark_onnx.runtime.stages.coarse import n_coarse_steps, semantic_for_steps

CASES = [  # (text, voice, seed, options): sampled and greedy, voices or none, EOS and duration cuts
    ("hello world", "announcer", 0, dict(max_gen_duration_s=2.0, allow_early_stop=False)),
    ("hello world", None, 1, dict(max_gen_duration_s=6.0, allow_early_stop=False)),  # 299 tokens: past 256
    ("a short one", "v2/en_speaker_1", 2, dict(max_gen_duration_s=1.3)),
    ("greedy", "announcer", 3, dict(text_temperature=0, waveform_temperature=0, max_gen_duration_s=1.5)),
    ("top k", None, 4, dict(top_k=20, max_gen_duration_s=1.1, allow_early_stop=False)),
    ("ends early", None, 5, dict(min_eos_p=0.0)),  # P(EOS) >= 0 at the first draw: no semantic tokens at all
]


def _same_tokens(streamed, one_shot):
    for field in ("semantic", "coarse"):
        np.testing.assert_array_equal(getattr(streamed, field), getattr(one_shot, field))


@pytest.mark.parametrize("case", CASES, ids=[c[0] + "-" + str(c[2]) for c in CASES])
def test_pipelined_stream_tokens_equal_one_shot(case, tiny_engine):
    text, voice, seed, kw = case
    one_shot = tiny_engine.synthesize(text, voice, seed=seed, silent=True, **kw)
    job = tiny_engine.stream(text, voice, seed=seed, **kw)
    chunks = list(job)
    streamed = job.result(timeout=300)
    _same_tokens(streamed, one_shot)
    assert len(np.concatenate(chunks) if chunks else []) == len(one_shot.audio)
    if kw.get("min_eos_p") == 0.0:  # the case of a semantic stage that ends at once
        assert one_shot.semantic.size == 0
    if not one_shot.semantic.size:
        assert not chunks and streamed.audio.size == 0


def test_a_window_waits_only_for_the_tokens_it_reads():
    # the first window reads 256 tokens without a voice, far fewer with one; then ~20 more per window
    assert semantic_for_steps(60) == 20 and n_coarse_steps(20) >= 60 > n_coarse_steps(19)
    for steps in range(1, 600, 7):
        n = semantic_for_steps(steps)
        assert n_coarse_steps(n) >= steps > n_coarse_steps(n - 1)


@pytest.fixture(scope="module")
def manual(model_dirs):
    """A tiny model whose engine steps only when the test calls `step()`."""
    tts = Bark.load(model_dirs["suno-tiny"], max_batch=4, background=False)
    yield tts
    tts.close()


@pytest.fixture
def policy(manual):
    """Set the manual model's admission policy for one test; the default comes back after it."""
    default = manual.engine.scheduler.policy
    yield lambda p: setattr(manual.engine.scheduler, "policy", p)
    manual.engine.scheduler.policy = default


def _stepped(tts, request):
    """Run one streamed request, a round per `step()`; the rounds, and the semantic tokens made, by its
    first chunk."""
    job = tts.submit(request)
    runs = tts.engine.executor.runs["semantic"]
    rounds, at_first = 0, None
    while tts.step():
        rounds += 1
        if at_first is None and job.first_chunk_s is not None:
            row = [r for r in range(runs.n.size) if runs.owner[r] is not None]
            at_first = (rounds, int(runs.n[row[0]]) if row else None)
    return job.result(0), rounds, at_first


def test_until_first_audio_the_semantic_run_steps_only_as_the_coarse_stage_needs(manual, policy):
    """first_audio_first: fewer semantic tokens made by the first chunk (fewer graph calls before it),
    and the same tokens and audio as without the pacing."""
    request = Request.make("hello there", "announcer", seed=7, allow_early_stop=False, max_gen_duration_s=8.0,
                           stream=True)
    policy(FifoPolicy(first_audio_first=True))
    paced, paced_rounds, paced_first = _stepped(manual, request)
    policy(FifoPolicy(first_audio_first=False))
    free, free_rounds, free_first = _stepped(manual, request)
    _same_tokens(paced, free)
    np.testing.assert_array_equal(paced.audio, free.audio)
    # by the first chunk (the same coarse steps either way), the paced run made only the semantic tokens
    # the first windows read, so fewer graph calls stand between the request and its first audio
    assert paced_first[1] < free_first[1]
    assert paced_rounds > free_rounds  # the stages overlap less until then: more rounds of one call each


def test_cancel_while_both_stages_are_in_flight_frees_both_rows(manual, policy):
    policy(FifoPolicy(first_audio_first=False))
    request = Request.make("hello world", seed=3, allow_early_stop=False, max_gen_duration_s=10.0, stream=True)
    job = manual.submit(request)
    decoders = manual.decoders
    for _ in range(400):
        manual.step()
        if decoders["semantic"].rows_in_use and decoders["coarse"].rows_in_use:
            break
    assert decoders["semantic"].rows_in_use == 1 and decoders["coarse"].rows_in_use == 1  # both in flight
    job.cancel()
    assert not job.done  # a running request ends at the next step
    manual.step()
    with pytest.raises(CancelledError):
        job.result(0)
    assert decoders["semantic"].rows_in_use == 0 and decoders["coarse"].rows_in_use == 0
    assert manual.stats()["rows_in_use"] == 0 and manual.stats()["cancelled"] >= 1
    assert not manual.engine.executor.runs["semantic"].active.any() and not manual.step()


def test_pipelined_requests_among_others_equal_their_solo_runs(model_dirs):
    tts = Bark.load(model_dirs["hf-mini"], max_batch=4)
    try:
        requests = [Request.make(text, voice, seed=seed, stream=True, **kw) for text, voice, seed, kw in CASES[:5]]
        requests.append(Request.make("a one-shot among them", seed=9, max_gen_duration_s=1.0))
        alone = [tts.submit(r).result(timeout=300) for r in requests]
        jobs = [tts.submit(r) for r in requests]  # 6 requests, 4 rows a stage: some wait in the queue
        for a, job in zip(alone, jobs):
            b = job.result(timeout=300)
            for field in ("semantic", "coarse", "fine", "audio"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        assert tts.stats()["rows_in_use"] == 0
    finally:
        tts.close()


def test_long_text_segments_prefetch_their_semantic_runs(tiny_engine):
    """history="voice": each segment's tokens equal its own run's, prefetched or not (the one-shot
    long path runs the segments one after another)."""
    text = "One two three. Four five six. Seven eight nine."
    kw = dict(long=True, max_words=3, history="voice", seed=4, max_gen_duration_s=0.8, allow_early_stop=False)
    one_shot = tiny_engine.synthesize(text, "announcer", silent=True, **kw)
    job = tiny_engine.stream(text, "announcer", **kw)
    list(job)
    streamed = job.result(timeout=300)
    _same_tokens(streamed, one_shot)
    assert len(streamed.audio) == len(one_shot.audio)
