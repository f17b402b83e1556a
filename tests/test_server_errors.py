"""The speech server's refusals and failures: OpenAI's error body for every 4xx (never a 422 nor a 500
for bad input), a 500 for a failure inside one request while the others go on, the time limit, and a
client that goes away mid-stream cancelling its generation."""

from __future__ import annotations

import json
import logging
import threading

import httpx
import numpy as np
import pytest

from bark_onnx import Bark
from bark_onnx.server import ServerSettings, create_app

from .serving import LiveServer, ScriptedBark, until

GOOD = {"model": "bark", "input": "hello world", "response_format": "pcm", "seed": 0, "max_gen_duration_s": 0.5}


@pytest.fixture(scope="module")
def served(tiny_engine):
    scripted = ScriptedBark(tiny_engine)
    settings = ServerSettings(served_model_name="suno-tiny", max_input_chars=200, request_timeout=60)
    with LiveServer(create_app(scripted, settings)) as server:
        server.tts = scripted
        yield server


def _error(response, status: int, param=None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and len(error["message"]) > 10
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    assert error["param"] == param, error
    return error


BAD_FIELDS = [  # (changes to GOOD, the param the error names)
    ({"input": ""}, "input"),
    ({"input": "   \n "}, "input"),
    ({"input": "a" * 201}, "input"),
    ({"input": 42}, "input"),
    ({"input": "hello \ud800"}, "input"),
    ({"instructions": "\udfff"}, "instructions"),
    ({"voice": "alloy"}, "voice"),
    ({"voice": "/etc/passwd"}, "voice"),
    ({"voice": "../../voices/announcer.npz"}, "voice"),
    ({"voice": {"id": "nope"}}, "voice"),
    ({"voice": 5}, "voice"),
    ({"model": "gpt-5"}, "model"),
    ({"response_format": "aiff"}, "response_format"),
    ({"response_format": "aac"}, "response_format"),
    ({"stream_format": "mp4"}, "stream_format"),
    ({"speed": 2.0}, "speed"),
    ({"speed": 10}, "speed"),
    ({"text_temperature": -1}, "text_temperature"),
    ({"text_temperature": "hot"}, "text_temperature"),
    ({"top_k": 0}, "top_k"),
    ({"top_p": 1.5}, "top_p"),
    ({"min_eos_p": 2}, "min_eos_p"),
    ({"max_gen_duration_s": 0}, "max_gen_duration_s"),
    ({"allow_early_stop": "no"}, "allow_early_stop"),
    ({"max_coarse_history": 10}, "max_coarse_history"),
    ({"seed": -1}, "seed"),
    ({"seed": True}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"history": "later"}, "history"),
    ({"pause_s": 11}, "pause_s"),
    ({"max_words": 0}, "max_words"),
    ({"temprature": 0.5}, "temprature"),
    ({"instructions": "x" * 201}, "instructions"),
]


@pytest.mark.parametrize("change,param", BAD_FIELDS, ids=[f"{p}-{i}" for i, (_, p) in enumerate(BAD_FIELDS)])
def test_bad_fields_are_400s_that_name_the_field_and_reach_no_engine(served, change, param):
    calls = len(served.tts.calls)
    body = json.dumps({**GOOD, **change})  # ASCII JSON: lone surrogates travel as escapes
    _error(httpx.post(f"{served.url}/v1/audio/speech", content=body, headers={"content-type": "application/json"}),
           400, param)
    assert len(served.tts.calls) == calls  # refused before any work


@pytest.mark.parametrize("content,headers", [
    (b'{"model": "bark", "input": ', {"content-type": "application/json"}),  # malformed JSON
    (b"[1, 2]", {"content-type": "application/json"}),
    (b"say hello", {"content-type": "text/plain"}),
    (b"", {"content-type": "application/json"}),
    (b"\xff\xfe", {}),
])
def test_malformed_bodies_are_400s(served, content, headers):
    _error(httpx.post(f"{served.url}/v1/audio/speech", content=content, headers=headers), 400)


def test_missing_fields_are_400s(served):
    assert _error(httpx.post(f"{served.url}/v1/audio/speech", json={"model": "bark"}), 400, "input")
    assert _error(httpx.post(f"{served.url}/v1/audio/speech", json={"input": "hi"}), 400, "model")


def test_oversized_body_unknown_route_and_wrong_method(served):
    huge = b'{"model": "bark", "input": "' + b"a" * 400_000 + b'"}'
    assert _error(httpx.post(f"{served.url}/v1/audio/speech", content=huge,
                             headers={"content-type": "application/json"}), 413)["code"] == "request_too_large"
    chunked = httpx.post(f"{served.url}/v1/audio/speech", content=iter([huge[:200_000], huge[200_000:]]),
                         headers={"content-type": "application/json"})
    _error(chunked, 413)
    assert _error(httpx.get(f"{served.url}/v1/nothing"), 404)["code"] == "not_found"
    assert _error(httpx.get(f"{served.url}/v1/audio/speech"), 405)["code"] == "method_not_allowed"


HEADERS = {  # what a hostile client may send
    "one of 800 KB": {"x-big": "a" * 800_000},
    "150 of them": {f"x-h{i}": "1" for i in range(150)},
    "90 of 400 bytes": {f"x-h{i}": "b" * 400 for i in range(90)},  # under the count, over the bytes
}


@pytest.mark.parametrize("headers", HEADERS.values(), ids=HEADERS.keys())
def test_oversized_request_headers_are_431s_that_say_the_limit(served, headers):
    from bark_onnx.server.middleware import MAX_HEADER_BYTES, MAX_HEADERS

    calls = len(served.tts.calls)
    error = _error(httpx.post(f"{served.url}/v1/audio/speech", json=GOOD, headers=headers, timeout=60), 431)
    assert error["code"] == "request_headers_too_large"
    assert f"at most {MAX_HEADERS} are accepted" in error["message"] or str(MAX_HEADER_BYTES) in error["message"]
    assert len(served.tts.calls) == calls  # refused before any work
    assert httpx.get(f"{served.url}/health", headers={f"x-h{i}": "c" * 100 for i in range(60)}).status_code == 200


def test_a_burst_gets_429s_beyond_what_the_engine_holds(model_dirs):
    """Threads post at once (a barrier) to a server whose model steps only when the test says so: two
    requests are held (max_batch 1 + max_queue 1), the others get 429 with Retry-After at once, and the
    two held ones end with their audio once the engine is stepped."""
    tts = Bark.load(model_dirs["suno-tiny"], max_batch=1, max_queue=1, background=False)
    n, answers, barrier = 8, [], threading.Barrier(8)
    settings = ServerSettings(served_model_name="suno-tiny", request_timeout=300, retry_after=3)
    try:
        with LiveServer(create_app(tts, settings)) as server:
            def post():
                barrier.wait()
                answers.append(httpx.post(f"{server.url}/v1/audio/speech", json=GOOD, timeout=300))

            threads = [threading.Thread(target=post) for _ in range(n)]
            for t in threads:
                t.start()
            until(lambda: len(answers) == n - 2 and tts.stats()["waiting"] == 2, 60, "six 429s, two held")
            while tts.step():
                pass
            for t in threads:
                t.join(300)
        refused = [a for a in answers if a.status_code == 429]
        assert len(refused) == n - 2 and all(a.headers["retry-after"] == "3" for a in refused)
        assert all(a.json()["error"]["code"] == "queue_full" for a in refused)
        done = [a for a in answers if a.status_code == 200]
        assert len(done) == 2 and all(np.frombuffer(a.content, "<i2").size > 0 for a in done)
    finally:
        tts.close()


def test_a_failure_inside_one_request_is_a_logged_500_and_the_others_go_on(served, caplog):
    url = f"{served.url}/v1/audio/speech"
    results = {}

    def normal():
        results["normal"] = httpx.post(url, json=GOOD, timeout=300)

    other = threading.Thread(target=normal)
    with caplog.at_level(logging.ERROR, logger="bark_onnx.server"):
        other.start()
        failed = httpx.post(url, json={**GOOD, "input": "boom"}, timeout=300)
        other.join(300)
    assert _error(failed, 500)["code"] == "internal_error"
    assert "scripted failure" not in failed.text  # the cause is logged, not sent
    assert any("scripted failure" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
    assert results["normal"].status_code == 200 and len(results["normal"].content) > 0
    with pytest.raises(httpx.RemoteProtocolError):  # failed after its first chunk: the stream is cut
        httpx.post(url, json={**GOOD, "input": "boom-after-one"}, timeout=300)
    sse = httpx.post(url, json={**GOOD, "input": "boom-after-one", "stream_format": "sse"}, timeout=300)
    assert '"type":"error"' in sse.text and '"code":"internal_error"' in sse.text
    assert httpx.post(url, json=GOOD, timeout=300).status_code == 200
    assert httpx.get(f"{served.url}/health").status_code == 200


def test_time_limit_cancels_with_504_before_audio_and_cuts_the_stream_after(tiny_engine):
    scripted = ScriptedBark(tiny_engine)
    with LiveServer(create_app(scripted, ServerSettings(request_timeout=0.5))) as server:
        url = f"{server.url}/v1/audio/speech"
        for fmt in ("pcm", "mp3"):
            assert _error(httpx.post(url, json={**GOOD, "input": "stall", "response_format": fmt}, timeout=60),
                          504)["code"] == "timeout"
            assert scripted.jobs[-1].cancelled
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.post(url, json={**GOOD, "input": "stall-after-one"}, timeout=60)
        assert scripted.jobs[-1].cancelled
        with httpx.stream("POST", url, json={**GOOD, "input": "stall-after-one", "stream_format": "sse"},
                          timeout=60) as response:
            text = response.read().decode()
        assert response.status_code == 200 and '"code":"timeout"' in text


def test_a_client_that_goes_away_mid_stream_cancels_its_generation(model_dirs):
    """A long request (EOS off, many segments: minutes of audio) is dropped after its first bytes:
    the engine cancels it and frees its batch rows; a request after it still runs."""
    tts = Bark.load(model_dirs["suno-tiny"], max_batch=2)
    try:
        with LiveServer(create_app(tts, ServerSettings())) as server:
            long_text = " ".join(f"sentence number {i} is here." for i in range(40))
            body = {**GOOD, "input": long_text, "max_words": 4, "allow_early_stop": False}
            del body["max_gen_duration_s"]
            with httpx.stream("POST", f"{server.url}/v1/audio/speech", json=body, timeout=300) as response:
                assert response.status_code == 200
                chunks = response.iter_raw()  # kept: a dropped iterator would close the connection at once
                assert len(next(chunks)) > 0
                assert tts.stats()["active"] == 1, tts.stats()
            until(lambda: tts.stats()["cancelled"] == 1, 60, "the dropped request was not cancelled")
            until(lambda: tts.stats()["rows_in_use"] == 0 and tts.stats()["active"] == 0, 60, "rows not freed")
            assert tts.stats()["completed"] == 0 and tts.stats()["failed"] == 0
            again = httpx.post(f"{server.url}/v1/audio/speech", json=GOOD, timeout=300)
            assert again.status_code == 200 and np.frombuffer(again.content, "<i2").size > 0
            assert tts.stats()["completed"] == 1
    finally:
        tts.close()
