"""`bark-onnx serve` as a process: overload sheds with Retry-After and loses no accepted request,
SIGTERM drains the requests in flight and exits 0 (within its grace period), and the runtime-only
install never needs FastAPI."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import textwrap

import httpx
import pytest

from bark_onnx.benchmarks.serve_load import ServerProcess, parse_metrics

from .serving import until

SHORT = {"model": "bark", "input": "hello world", "response_format": "pcm", "seed": 7, "max_gen_duration_s": 0.5}
LONG_TEXT = " ".join(f"sentence number {i} is here." for i in range(40))
# EOS off and ~80 segments: minutes of audio, so it is still generating whatever the machine's speed
LONG = {"model": "bark", "input": LONG_TEXT, "response_format": "pcm", "seed": 1, "max_words": 4,
        "allow_early_stop": False}


def metrics(url: str) -> dict[str, float]:
    return parse_metrics(httpx.get(f"{url}/metrics", timeout=30).text)


def test_overload_sheds_with_retry_after_and_loses_no_accepted_request(model_dirs):
    with ServerProcess(model_dirs["suno-tiny"], "--max-batch", "1", "--max-queue", "1") as server:
        url = f"{server.url}/v1/audio/speech"
        reference = httpx.post(url, json=SHORT, timeout=300)
        assert reference.status_code == 200 and len(reference.content) > 0

        async def burst():
            async with httpx.AsyncClient(timeout=300) as client:
                async with client.stream("POST", url, json=LONG) as holder:  # takes the one batch row
                    assert holder.status_code == 200
                    chunks = holder.aiter_raw()
                    assert len(await chunks.__anext__()) > 0
                    tasks = [asyncio.create_task(client.post(url, json=SHORT)) for _ in range(5)]
                    # one waits in the queue, the others are shed at once, while the holder generates
                    done, pending = set(), set(tasks)
                    while len(done) < 4:
                        finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                        done |= finished
                    assert metrics(server.url)["bark_onnx_queue_waiting"] == 1
                # the holder went away: its row frees, the queued request runs
                return [t.result() for t in done], await asyncio.gather(*pending)

        shed, accepted = asyncio.run(burst())
        assert len(shed) == 4 and len(accepted) == 1
        for response in shed:
            assert response.status_code == 429
            assert int(response.headers["retry-after"]) >= 1
            error = response.json()["error"]
            assert error["code"] == "queue_full" and error["type"] == "rate_limit_error"
        assert accepted[0].status_code == 200
        assert accepted[0].content == reference.content  # the accepted request, whole and unchanged
        until(lambda: metrics(server.url)['bark_onnx_engine_requests_total{outcome="cancelled"}'] == 1, 60,
              "the dropped holder was not cancelled")
        after = metrics(server.url)
        assert after['bark_onnx_engine_requests_total{outcome="completed"}'] == 2
        assert after['bark_onnx_engine_requests_total{outcome="failed"}'] == 0
        assert after['bark_onnx_requests_total{route="/v1/audio/speech",status="429"}'] == 4
        assert after["bark_onnx_rows_in_use"] == 0
        assert httpx.get(f"{server.url}/health").status_code == 200


def _refused(url: str) -> bool:
    try:
        httpx.get(f"{url}/health", timeout=5)
    except httpx.TransportError:
        return True
    return False


def test_sigterm_stops_accepting_drains_the_request_in_flight_and_exits_0(model_dirs):
    body = {**LONG, "input": "one two three. four five six. seven eight nine."}  # 3 segments of 15 s
    server = ServerProcess(model_dirs["suno-tiny"], "--drain-timeout", "300")
    try:
        reference = httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=300)
        assert reference.status_code == 200
        with httpx.stream("POST", f"{server.url}/v1/audio/speech", json=body, timeout=300) as response:
            chunks = response.iter_raw()
            received = [next(chunks)]
            assert metrics(server.url)["bark_onnx_requests_active"] == 1
            server.signal(signal.SIGTERM)
            until(lambda: _refused(server.url), 60, "the server still accepts connections after SIGTERM")
            received += list(chunks)
        assert b"".join(received) == reference.content  # the request in flight finished, whole
        assert server.proc.wait(timeout=120) == 0
        assert "draining" in server.log and "stopped" in server.log
    finally:
        server.stop()


def test_sigterm_drain_is_bounded_by_the_grace_period(model_dirs):
    server = ServerProcess(model_dirs["suno-tiny"], "--drain-timeout", "1")
    try:
        with httpx.stream("POST", f"{server.url}/v1/audio/speech", json=LONG, timeout=300) as response:
            chunks = response.iter_raw()
            received = len(next(chunks))
            server.signal(signal.SIGTERM)
            assert server.proc.wait(timeout=120) == 0  # minutes of audio left, but the grace is 1 s
            try:
                received += sum(len(c) for c in chunks)
            except httpx.TransportError:
                pass  # the cut stream: the client sees it incomplete
        assert received < 2 * 24000 * 15 * 40  # far short of the whole text
    finally:
        server.stop()


def test_serve_fails_fast_on_a_port_in_use(model_dirs):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "bark_onnx.cli", "serve", "--model", str(model_dirs["suno-tiny"]),
                               "--port", str(port)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stderr


def test_the_cli_needs_no_fastapi_until_serve_runs():
    script = textwrap.dedent("""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("fastapi", "starlette", "uvicorn", "soundfile", "pydantic"):
                    raise ImportError(f"No module named {name!r}")
        sys.meta_path.insert(0, Block())
        from bark_onnx.cli import build_parser, main
        import bark_onnx.server
        build_parser()
        assert main(["serve", "--model", "nowhere", "--port", "0"]) == 2
        assert not any(m.split(".")[0] in ("fastapi", "uvicorn") for m in sys.modules)
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'bark-onnx[serve]'" in proc.stderr


def test_serve_checks_threads_as_say_does():
    from bark_onnx.cli import main

    for command in (["serve", "--port", "0"], ["say", "hi", "--out", "x.wav"]):
        with pytest.raises(SystemExit) as stop:
            main([*command, "--threads", "0"])
        assert stop.value.code == 2
