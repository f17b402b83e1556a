"""The speech server on Ray Serve: `bark-onnx serve --ray` with two replicas on a local Ray instance
(requests through OpenAI's client spread over both; a replica killed with Ray's API is replaced while
the other keeps answering), then a two-node cluster simulated on this machine (a node removed, the
service still answering). Loopback only, small Ray limits, every wait bounded, and no Ray process
left behind."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import ray
from ray import serve

from bark_onnx import Bark
from bark_onnx.benchmarks.serve_load import ServerProcess
from bark_onnx.server.ray_app import APP_NAME, DEPLOYMENT, REPLICA_HEADER, application
from bark_onnx.server.settings import ServerSettings

from .serving import pcm16, until

pytestmark = pytest.mark.slow

MB = 2 ** 20
SHORT = dict(seed=3, max_gen_duration_s=0.5)
# ~80 segments of 2 s: minutes of audio, still generating whatever the machine's speed
LONG = {"model": "bark", "input": " ".join(f"sentence number {i} is here." for i in range(40)),
        "response_format": "pcm", "seed": 1, "max_words": 4, "allow_early_stop": False, "max_gen_duration_s": 2.0}
MEDIUM = {**LONG, "input": " ".join(f"sentence number {i} is here." for i in range(3)), "max_gen_duration_s": 0.5}
PREFIX = 2 * 24000 * 2  # bytes of 16-bit audio compared after a fault: two seconds


@pytest.fixture(scope="module", autouse=True)
def ray_token():
    """The token every Ray instance here authenticates with (conftest sets RAY_AUTH_MODE=token), made
    once where this machine has none yet (`ray get-auth-token --generate`, into ~/.ray/auth_token)."""
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token", "--generate"],
                   capture_output=True, check=True, timeout=120)


def descendants(pid: int) -> set[int]:
    """Every process below `pid` now (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def running(pids: set[int]) -> set[int]:
    """The pids still running (an exited child not yet reaped counts as gone)."""
    alive = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            alive.add(pid)
    return alive


def kill_leftovers(pids: set[int]) -> set[int]:
    """SIGKILL what still runs of the processes a test started (so a failure leaves nothing behind)."""
    left = running(pids)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def openai_client(url: str):
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)


class Stream:
    """A streamed speech request held open after its first chunk (its replica keeps generating it)."""

    def __init__(self, client: httpx.Client, url: str, body: dict):
        self._context = client.stream("POST", f"{url}/v1/audio/speech", json=body)
        self.response = self._context.__enter__()
        assert self.response.status_code == 200, self.response.read()
        self.replica = self.response.headers[REPLICA_HEADER]
        self._chunks = self.response.iter_raw()
        self.received = next(self._chunks)

    def read_more(self, size: int) -> bytes:
        """At least `size` more bytes (all received so far returned); raises what the client sees when
        the stream is cut."""
        goal = len(self.received) + size
        while len(self.received) < goal:
            self.received += next(self._chunks)
        return self.received

    def close(self) -> None:
        """Leave: the server cancels the generation."""
        self._context.__exit__(None, None, None)


def prefix(client: httpx.Client, url: str, body: dict) -> bytes:
    """The first PREFIX bytes of `body`'s audio, asked alone."""
    stream = Stream(client, url, body)
    try:
        return stream.read_more(PREFIX)[:PREFIX]
    finally:
        stream.close()


def one_stream_per_replica(client: httpx.Client, url: str, body: dict, replicas: int, most: int) -> dict:
    """Open streams until `replicas` replicas each hold one, in the order they were reached (at most
    `most` streams; the extra ones stay open until then, so the replicas they fill stay full)."""
    held: dict[str, Stream] = {}
    extra: list[Stream] = []
    try:
        while len(held) < replicas and len(held) + len(extra) < most:
            stream = Stream(client, url, body)
            if stream.replica in held:
                extra.append(stream)
            else:
                held[stream.replica] = stream
    finally:
        for stream in extra:
            stream.close()
    if len(held) < replicas:
        for stream in held.values():
            stream.close()
        raise AssertionError(f"{most} streams reached only the replicas {sorted(held)}")
    return held


def survivor_goes_on_lost_is_cut(streams: dict, survivor: str, lost: str, reference: bytes) -> None:
    """After a replica is lost: the surviving replica's stream goes on unchanged, the lost one's
    ends with a broken stream; then every stream is closed."""
    try:
        assert streams[survivor].read_more(PREFIX)[:PREFIX] == reference
        with pytest.raises(httpx.RemoteProtocolError):
            streams[lost].read_more(10 ** 9)
    finally:
        for stream in streams.values():
            stream.close()


def speak(url: str, busy_for: float = 0.0) -> tuple[int, str | None]:
    """A short request: its status and the replica that answered. With `busy_for`, a 429 (the router
    still counting streams that were just closed) is retried after its Retry-After, for that long."""
    give_up = time.monotonic() + busy_for
    while True:
        response = httpx.post(f"{url}/v1/audio/speech", json={"model": "bark", "input": "hello world",
                                                              "response_format": "pcm", **SHORT}, timeout=300)
        if response.status_code != 429 or time.monotonic() > give_up:
            return response.status_code, response.headers.get(REPLICA_HEADER)
        time.sleep(float(response.headers.get("retry-after", 1)))


# ---------------------------------------------------------------- `bark-onnx serve --ray`, two replicas


@pytest.fixture(scope="module")
def expected(model_dirs):
    """What the library makes for SHORT with the announcer voice, as 16-bit PCM."""
    with Bark.load(model_dirs["suno-tiny"]) as tts:
        return pcm16(tts.stream("hello world", "announcer", **SHORT).result(timeout=300).audio)


@pytest.fixture(scope="module")
def ray_server(model_dirs):
    """`bark-onnx serve --ray` with two replicas of max batch 2 and queue 2, one CPU thread each."""
    server = ServerProcess(model_dirs["suno-tiny"], "--ray", "--replicas", "2", "--threads", "1",
                           "--max-batch", "2", "--max-queue", "2", "--served-model-name", "suno-tiny")
    started = descendants(server.pid)
    try:
        server.ray_address = re.search(r"Ray at (\S+);", server.log).group(1)
        ray.init(address=server.ray_address, logging_level=logging.WARNING, log_to_driver=False)
        server.processes = started | descendants(server.pid)
        yield server
    finally:
        ray.shutdown()
        server.stop(timeout=120)
        kill_leftovers(started | descendants(server.pid) | getattr(server, "processes", set()))


def test_openai_client_requests_spread_over_both_replicas(ray_server, expected):
    client = openai_client(ray_server.url)
    audio = client.audio.speech.with_raw_response.create(model="tts-1", voice="announcer", input="hello world",
                                                         response_format="pcm", extra_body=SHORT)
    assert audio.status_code == 200 and audio.headers[REPLICA_HEADER]
    np.testing.assert_array_equal(np.frombuffer(audio.content, "<i2"), expected)  # the library's own audio

    def speak_medium(seed: int):
        body = {k: v for k, v in MEDIUM.items() if k not in ("model", "input", "response_format")}
        response = client.audio.speech.with_raw_response.create(
            model="tts-1", voice="announcer", input=MEDIUM["input"], response_format="pcm",
            extra_body={**body, "seed": seed})
        return seed, response.headers[REPLICA_HEADER], response.content

    # 8 at once, each replica holds 4 (max batch 2 + queue 2): the router must use both
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(speak_medium, [0, 1] * 4))
    replicas = {replica for _, replica, _ in answers}
    assert len(replicas) == 2, replicas
    for seed in (0, 1):  # a seed gives the same audio whichever replica made it
        bodies = {content for s, _, content in answers if s == seed}
        assert len(bodies) == 1 and len(next(iter(bodies))) > 0
    health = httpx.get(f"{ray_server.url}/health", timeout=60)
    assert health.status_code == 200 and health.headers[REPLICA_HEADER] in replicas


def test_bench_serve_loads_every_replica(ray_server, tmp_path):
    out = tmp_path / "ray.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bark_onnx.cli", "bench", "serve", "--url", ray_server.url, "--replicas", "2",
         "--requests", "8", "--soak", "0", "--max-gen-duration-s", "0.5", "--time-limit", "300", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["replicas"] == 2 and result["max_batch"] == 2 and not result["time_limit_reached"]
    # 1x: a full batch on each replica (2 x 2 clients), 2x: twice that
    assert [(name, level["concurrency"]) for name, level in result["levels"].items()] == [("1x", 4), ("2x", 8)]
    for level in result["levels"].values():
        assert level["ok"] == level["sent"] == 8 and level["errors"] == 0, level


def test_a_killed_replica_is_replaced_and_the_other_keeps_answering(ray_server):
    url = ray_server.url
    with httpx.Client(timeout=600) as client:
        reference = prefix(client, url, LONG)
        streams = one_stream_per_replica(client, url, LONG, replicas=2, most=8)
        victim, survivor = sorted(streams)
        ray.kill(ray.get_actor(f"SERVE_REPLICA::{APP_NAME}#{DEPLOYMENT}#{victim}", namespace="serve"),
                 no_restart=True)
        killed = time.monotonic()
        survivor_goes_on_lost_is_cut(streams, survivor, victim, reference)

    # the service keeps answering while Serve starts a replacement; two replicas answer again
    answered, failures = set(), []
    while len(answered - {victim}) < 2:
        assert time.monotonic() - killed < 120, f"only {answered} answered within two minutes; failures {failures}"
        try:
            status, replica = speak(url)
        except httpx.TransportError as err:
            status, replica = 0, repr(err)
        if status == 200:
            answered.add(replica)
        else:  # one already routed to the dead replica may fail
            failures.append((status, replica))
    assert victim not in answered and survivor in answered
    assert len(failures) <= 1 and all(status == 0 or status >= 500 for status, _ in failures), failures


def test_sigterm_removes_the_app_shuts_ray_down_and_exits_0(ray_server):
    processes = ray_server.processes | descendants(ray_server.pid)
    assert len(running(processes)) >= 4  # the local instance's processes: gcs, raylet, workers, ...
    ray.shutdown()  # this test's own connection first
    assert ray_server.stop(timeout=120) == 0
    assert "bark-onnx: stopped" in ray_server.log
    until(lambda: not running(processes), 60, "the local Ray instance's processes ended", every=0.5)


# ---------------------------------------------------------------- clusters simulated on one machine


@contextlib.contextmanager
def simulated_cluster(*node_cpus: int):
    """A Ray cluster of one node per entry (its CPUs), this process its driver; torn down on leaving,
    and every process it started checked gone (what is left is killed, and the test fails)."""
    from ray.cluster_utils import Cluster

    before = descendants(os.getpid())
    head, *others = node_cpus
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head, "object_store_memory": 80 * MB,
                                                            "include_dashboard": False})
    started: set[int] = set()
    try:
        workers = [cluster.add_node(num_cpus=cpus, object_store_memory=80 * MB) for cpus in others]
        ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
        yield cluster, workers
    finally:
        started = descendants(os.getpid()) - before  # the cluster's processes, seen while it runs
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()
    started |= descendants(os.getpid()) - before
    assert len(started) >= 3  # gcs, raylets, workers, ...
    try:
        until(lambda: not running(started), 60, "the cluster's processes ended", every=0.5)
    finally:
        kill_leftovers(started)


def test_serve_ray_joins_a_running_cluster_and_leaves_it_running(model_dirs):
    with simulated_cluster(2) as (cluster, _):
        server = ServerProcess(model_dirs["suno-tiny"], "--ray", "--ray-address", cluster.address, "--replicas", "2",
                               "--threads", "1", "--max-batch", "2", "--max-queue", "2", "--instance", "joined")
        try:
            assert f"on the Ray cluster at {cluster.address}" in server.log
            answers = [speak(server.url) for _ in range(2)]
            assert all(status == 200 for status, _ in answers)
            health = httpx.get(f"{server.url}/health", timeout=60)
            assert health.json() == {"status": "ok", "instance": "joined"}
            assert health.headers["x-bark-onnx-instance"] == "joined" and health.headers[REPLICA_HEADER]
            assert serve.status().applications[APP_NAME].status == "RUNNING"
            assert ray.available_resources().get("CPU", 0) == 0  # the two replicas took the node's two CPUs
        finally:
            assert server.stop(timeout=120) == 0
        # the command removed its app and left the cluster running
        until(lambda: APP_NAME not in serve.status().applications, 60, "the app was removed", every=0.5)
        assert ray.cluster_resources()["CPU"] == 2
        until(lambda: ray.available_resources().get("CPU", 0) == 2, 60, "the replicas' CPUs were freed", every=0.5)


def test_two_node_cluster_keeps_answering_when_a_node_goes(model_dirs):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with simulated_cluster(1, 1) as (cluster, (worker,)):
        serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly",
                    logging_config={"log_level": "WARNING"})
        settings = ServerSettings(model=str(model_dirs["suno-tiny"]), served_model_name="suno-tiny", threads=1,
                                  max_batch=2, max_queue=0, ray=True, replicas=2)
        serve.run(application(settings), name=APP_NAME, route_prefix="/")
        # each node has one CPU and each replica reserves one: one replica per node
        assert ray.cluster_resources()["CPU"] == 2 and ray.available_resources().get("CPU", 0) == 0

        with httpx.Client(timeout=600) as client:
            reference = prefix(client, url, LONG)
            # the head's proxy prefers the head's replica until it holds 2 (max batch 2, no queue), so
            # the first two streams land there and the third on the other node's
            streams = one_stream_per_replica(client, url, LONG, replicas=2, most=3)
            head_replica, lost = streams
            cluster.remove_node(worker)
            gone = time.monotonic()
            survivor_goes_on_lost_is_cut(streams, head_replica, lost, reference)
        answers = [speak(url, busy_for=60) for _ in range(5)]
        assert answers == [(200, head_replica)] * 5 and time.monotonic() - gone < 120
