"""The speech server with OpenAI's own client: every format, streaming, SSE, the metadata routes, auth."""

from __future__ import annotations

import base64
import io
import json
import wave

import httpx
import numpy as np
import pytest
import soundfile

from bark_onnx.server import ServerSettings, create_app

from .serving import LiveServer, ScriptedBark, pcm16

REQUEST = dict(seed=3, max_gen_duration_s=1.0)  # Bark's options, sent as extra fields


@pytest.fixture(scope="module")
def served(tiny_engine):
    scripted = ScriptedBark(tiny_engine)
    with LiveServer(create_app(scripted, ServerSettings(served_model_name="suno-tiny", instance="test-1"))) as server:
        server.tts = scripted
        yield server


@pytest.fixture(scope="module")
def expected(tiny_engine):
    """What the library itself makes for REQUEST with the announcer voice, as 16-bit PCM."""
    return pcm16(tiny_engine.stream("hello world", "announcer", **REQUEST).result(timeout=300).audio)


def openai_client(url: str, key: str = "unused"):
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=300)


def test_openai_client_gets_every_format_and_each_decodes(served, expected):
    client = openai_client(served.url)
    got = {fmt: client.audio.speech.create(model="tts-1", voice="announcer", input="hello world",
                                           response_format=fmt, extra_body=REQUEST).content
           for fmt in ("pcm", "wav", "flac", "mp3", "opus")}
    assert expected.size > 0
    np.testing.assert_array_equal(np.frombuffer(got["pcm"], "<i2"), expected)  # the library's own audio
    with wave.open(io.BytesIO(got["wav"])) as w:  # the streamed header: sizes unknown, data to the end
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24000, 1, 2)
        np.testing.assert_array_equal(np.frombuffer(w.readframes(expected.size + 100), "<i2"), expected)
    for fmt in ("wav", "flac"):  # lossless: the same samples
        audio, rate = soundfile.read(io.BytesIO(got[fmt]), dtype="int16")
        assert rate == 24000
        np.testing.assert_array_equal(audio, expected)
    for fmt in ("mp3", "opus"):  # lossy: 24 kHz mono of about the same length
        audio, rate = soundfile.read(io.BytesIO(got[fmt]), dtype="float32")
        assert rate == 24000 and audio.ndim == 1
        assert abs(audio.size - expected.size) <= 0.1 * expected.size + 2400, (fmt, audio.size, expected.size)
        assert np.abs(audio).max() > 0.01


@pytest.mark.parametrize("fmt", ["pcm", "wav"])
def test_streamed_formats_deliver_first_bytes_before_the_generation_ends(served, fmt):
    """The job holds its second chunk until the client has the first bytes: only a streaming server
    gets past that gate, and the request still ends with all of its audio."""
    tts = served.tts
    tts.gate.clear()
    client = openai_client(served.url)
    received = []
    with client.audio.speech.with_streaming_response.create(
            model="suno-tiny", voice="announcer", input="gated hello", response_format=fmt,
            extra_body=dict(seed=5, max_gen_duration_s=3.0)) as response:
        assert response.headers["content-type"].startswith(f"audio/{fmt}")
        for data in response.iter_bytes():
            received.append(data)
            tts.gate.set()
    job = tts.jobs[-1]
    assert job.opened is True  # the first bytes arrived while the generation was held open
    body = b"".join(received)
    start = 44 if fmt == "wav" else 0
    assert len(body) - start == 2 * job.job.result(timeout=60).audio.size


def test_sse_sends_base64_deltas_then_done(served, tiny_engine):
    options = dict(seed=4, max_gen_duration_s=3.0)  # long enough for several chunks
    expected = pcm16(tiny_engine.stream("hello world", "announcer", **options).result(timeout=300).audio)
    with httpx.stream("POST", f"{served.url}/v1/audio/speech", timeout=300,
                      json={"model": "bark", "input": "hello world", "voice": "announcer", "response_format": "pcm",
                            "stream_format": "sse", **options}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[len("data: "):]) for line in response.iter_lines() if line.startswith("data: ")]
    assert [e["type"] for e in events[-1:]] == ["speech.audio.done"]
    deltas = [e for e in events[:-1] if e["type"] == "speech.audio.delta"]
    assert len(deltas) == len(events) - 1 and len(deltas) >= 2  # streamed chunk by chunk
    audio = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    np.testing.assert_array_equal(np.frombuffer(audio, "<i2"), expected)


def test_sse_of_a_whole_file_format(served):
    response = httpx.post(f"{served.url}/v1/audio/speech", timeout=300,
                          json={"model": "bark", "input": "hello world", "response_format": "flac",
                                "stream_format": "sse", **REQUEST})
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events] == ["speech.audio.delta", "speech.audio.done"]
    audio, rate = soundfile.read(io.BytesIO(base64.b64decode(events[0]["audio"])))
    assert rate == 24000 and audio.size > 0


def test_instructions_are_accepted_and_ignored(served, expected):
    client = openai_client(served.url)
    audio = client.audio.speech.create(model="bark", voice={"id": "announcer"}, input="hello world",
                                       response_format="pcm", instructions="Speak like a pirate.",
                                       extra_body=REQUEST).content
    np.testing.assert_array_equal(np.frombuffer(audio, "<i2"), expected)


def test_text_of_several_segments_takes_the_long_form_path(served):
    tts = served.tts
    body = {"model": "bark", "response_format": "pcm", "max_words": 3, "pause_s": 0.5, "history": "previous",
            "seed": 1, "max_gen_duration_s": 0.3}
    short = httpx.post(f"{served.url}/v1/audio/speech", json={**body, "input": "hello there"}, timeout=300)
    assert short.status_code == 200 and tts.calls[-1].long is None  # one segment: an ordinary request
    long = httpx.post(f"{served.url}/v1/audio/speech", timeout=300,
                      json={**body, "input": "hello there friend. this is a test. of long text"})
    assert long.status_code == 200
    call = tts.calls[-1]
    assert (call.long.history, call.long.pause_s, call.long.max_words) == ("previous", 0.5, 3)
    assert len(call.segments) >= 3
    pause = np.frombuffer(long.content, "<i2")
    assert pause.size > 2 * 12000  # three segments joined by two half-second pauses at least


def test_models_voices_health_ready_and_instance_header(served):
    models = httpx.get(f"{served.url}/v1/models").json()
    ids = [m["id"] for m in models["data"]]
    assert ids[0] == "suno-tiny" and {"bark", "tts-1", "tts-1-hd"} <= set(ids)
    assert all(m["object"] == "model" and m["root"] == "suno-tiny" for m in models["data"])
    assert httpx.get(f"{served.url}/v1/models/tts-1").json()["alias"] is True
    assert httpx.get(f"{served.url}/v1/models/gpt-5").status_code == 404
    voices = httpx.get(f"{served.url}/v1/audio/voices").json()["voices"]
    assert {"announcer", "v2/en_speaker_0"} <= set(voices) and not any("/" == v[0] or ".npz" in v for v in voices)
    health = httpx.get(f"{served.url}/health")
    assert health.status_code == 200 and health.headers["x-bark-onnx-instance"] == "test-1"
    assert httpx.get(f"{served.url}/ready").json()["status"] == "ready"
    page = httpx.get(f"{served.url}/")
    assert page.status_code == 200 and "<button id=\"speak\"" in page.text


def test_draining_refuses_new_speech_with_503_and_ready_says_so(served):
    state = served.server.config.app.state.bark
    state.draining = True
    try:
        ready = httpx.get(f"{served.url}/ready")
        refused = httpx.post(f"{served.url}/v1/audio/speech", json={"model": "bark", "input": "hello"})
    finally:
        state.draining = False
    assert ready.status_code == 503 and ready.json()["error"]["type"] == "server_error"
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "shutting_down"


def test_metrics_count_requests_and_audio(served):
    before = httpx.get(f"{served.url}/metrics").text
    ok = httpx.post(f"{served.url}/v1/audio/speech", timeout=300,
                    json={"model": "bark", "input": "hello world", "response_format": "wav", **REQUEST})
    bad = httpx.post(f"{served.url}/v1/audio/speech", json={"model": "bark", "input": ""})
    assert (ok.status_code, bad.status_code) == (200, 400)
    text = httpx.get(f"{served.url}/metrics").text
    from bark_onnx.benchmarks.serve_load import parse_metrics

    b, a = parse_metrics(before), parse_metrics(text)
    ok_key = 'bark_onnx_requests_total{route="/v1/audio/speech",status="200"}'
    bad_key = 'bark_onnx_requests_total{route="/v1/audio/speech",status="400"}'
    assert a[ok_key] == b.get(ok_key, 0) + 1 and a[bad_key] == b.get(bad_key, 0) + 1
    assert a["bark_onnx_audio_seconds_total"] > b["bark_onnx_audio_seconds_total"]
    for name in ("bark_onnx_time_to_first_audio_seconds_count", "bark_onnx_request_duration_seconds_count",
                 "bark_onnx_real_time_factor_count"):
        assert a[name] == b[name] + 1, name
    assert a['bark_onnx_time_to_first_audio_seconds_bucket{le="+Inf"}'] == a[
        "bark_onnx_time_to_first_audio_seconds_count"]
    for name in ("bark_onnx_queue_waiting", "bark_onnx_requests_active", "bark_onnx_rows_in_use",
                 "process_resident_memory_bytes", 'bark_onnx_engine_requests_total{outcome="completed"}'):
        assert name in a, name
    assert a["bark_onnx_max_batch"] == 4 and a["process_resident_memory_bytes"] > 0


def test_api_key(tiny_engine):
    app = create_app(tiny_engine, ServerSettings(served_model_name="suno-tiny", api_key="sekret"))
    with LiveServer(app) as server:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic sekret"},
                        {"Authorization": "sekret"}):
            refused = httpx.get(f"{server.url}/v1/models", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.json()["error"]["code"] == "invalid_api_key"
        speech = httpx.post(f"{server.url}/v1/audio/speech", json={"model": "bark", "input": "hi"})
        assert speech.status_code == 401
        assert httpx.get(f"{server.url}/health").status_code == 200  # probes need no key
        from openai import AuthenticationError

        with pytest.raises(AuthenticationError):
            openai_client(server.url, "wrong").models.list()
        assert openai_client(server.url, "sekret").models.list().data[0].id == "suno-tiny"
        audio = openai_client(server.url, "sekret").audio.speech.create(
            model="bark", voice="announcer", input="hi", response_format="pcm", extra_body=REQUEST).content
        assert len(audio) > 0


def test_the_server_package_example_runs_as_written(model_dirs, tmp_path, monkeypatch):
    """bark_onnx.server's docstring example, run from a folder where its model path exists."""
    import textwrap

    from fastapi.testclient import TestClient

    import bark_onnx.server

    lines = bark_onnx.server.__doc__.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("    "))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("    "))
    (tmp_path / "bark-small-onnx").symlink_to(model_dirs["suno-tiny"], target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(textwrap.dedent("\n".join(lines[start:end])), namespace)
    app = namespace["app"]
    try:
        models = TestClient(app).get("/v1/models").json()
        assert models["data"][0]["id"] == "bark-small"
    finally:
        app.state.bark.tts.close()
