"""What `serve --ray` asks of Ray Serve, checked without starting Ray: replica resources, the request
limits tied to the engine, autoscaling, the config-file builder, the replica header and health check,
and the command line's errors."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from bark_onnx.errors import InputError
from bark_onnx.server.ray_app import (DEPLOYMENT, REPLICA_HEADER, ReplicaHeader, ReplicaPlan, SpeechReplica, build,
                                      deployment_options, parse_autoscale)
from bark_onnx.server.settings import ServerSettings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ServerSettings(model_name="m", instance="here")


def plan(**overrides) -> ReplicaPlan:
    return ReplicaPlan(**{"model": "/models/m", "settings": SETTINGS, **overrides})


def test_replicas_reserve_their_threads_and_take_what_their_engine_holds():
    options = deployment_options(plan(threads=3, max_batch=8, max_queue=24), replicas=2, drain_timeout_s=12)
    assert options["num_replicas"] == 2
    assert options["ray_actor_options"] == {"num_cpus": 3}  # no GPU asked for: none reserved
    assert options["max_ongoing_requests"] == 32  # max batch + max queue: the engine never sheds a routed request
    assert options["max_queued_requests"] == 64  # a burst both replicas can take is never shed while routed
    assert options["backpressure_config"] == {"status_code": 429, "retry_after_s": 1}
    assert options["graceful_shutdown_timeout_s"] == 12.0
    assert "autoscaling_config" not in options


@pytest.mark.parametrize("providers, gpus, expected", [
    (("cuda", "cpu"), None, 1.0), (("TensorRT", "cuda", "cpu"), None, 1.0), (("CUDAExecutionProvider",), None, 1.0),
    (("cpu",), None, 0.0), (None, None, 0.0), (("cuda", "cpu"), 0.25, 0.25), (None, 0.5, 0.5), (("cuda",), 0, 0.0),
])
def test_gpus_per_replica_follow_the_providers_unless_given(providers, gpus, expected):
    options = deployment_options(plan(providers=providers, gpus=gpus))
    assert options["ray_actor_options"].get("num_gpus", 0.0) == expected


def test_autoscaling_on_the_requests_in_flight():
    options = deployment_options(plan(max_batch=4, max_queue=4), autoscale=(0, 3))
    assert "num_replicas" not in options
    assert options["autoscaling_config"] == {"min_replicas": 0, "max_replicas": 3, "initial_replicas": 1,
                                             "target_ongoing_requests": 4}
    assert options["max_queued_requests"] == 3 * 8  # sized for the most replicas


def test_serve_takes_the_options():
    for options in (deployment_options(plan(max_queue=0), replicas=1),
                    deployment_options(plan(providers=("cuda",)), autoscale=(1, 4), drain_timeout_s=0)):
        deployment = SpeechReplica.options(**options)  # Serve checks every option here
        assert deployment.name == DEPLOYMENT
        assert deployment.max_ongoing_requests == options["max_ongoing_requests"]
        assert deployment.max_queued_requests == options["max_queued_requests"]
        assert deployment.ray_actor_options == options["ray_actor_options"]
    config = SpeechReplica.options(**deployment_options(plan(), autoscale=(1, 4)))._deployment_config
    assert (config.autoscaling_config.min_replicas, config.autoscaling_config.max_replicas) == (1, 4)


@pytest.mark.parametrize("text", ["3", "a:b", "2:1", "-1:2", "0:0", ":", "1:2:3"])
def test_autoscale_takes_min_colon_max(text):
    with pytest.raises(InputError, match="MIN:MAX"):
        parse_autoscale(text)


def test_autoscale_parses():
    assert parse_autoscale("1:4") == (1, 4) and parse_autoscale("0:2") == (0, 2)


@pytest.mark.parametrize("overrides, message", [
    ({"threads": 0}, "threads"), ({"max_batch": 0}, "max_batch"), ({"max_queue": -1}, "max_queue"),
    ({"gpus": -0.5}, "gpus"), ({"gpus": "one"}, "gpus"), ({"model": ""}, "model"),
])
def test_a_bad_plan_says_what_is_accepted(overrides, message):
    with pytest.raises(InputError, match=message):
        plan(**overrides)


def test_bad_counts_are_refused():
    with pytest.raises(InputError, match="replicas"):
        deployment_options(plan(), replicas=0)
    with pytest.raises(InputError, match="drain timeout"):
        deployment_options(plan(), drain_timeout_s=-1)


def test_the_config_file_builds_the_application():
    config = yaml.safe_load((ROOT / "deploy" / "serve-config.yaml").read_text())
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema(**config)  # what `serve deploy` checks first
    (app,) = config["applications"]
    assert app["import_path"] == "bark_onnx.server.ray_app:build"
    deployment = build(app["args"])._bound_deployment
    assert deployment.name == DEPLOYMENT == app["deployments"][0]["name"]
    (replica_plan,) = deployment.init_args
    assert replica_plan.model == app["args"]["model"] and replica_plan.threads == app["args"]["threads"]


def test_build_takes_the_serve_options_as_args(monkeypatch):
    monkeypatch.setenv("BARK_ONNX_API_KEY", "from-env")
    deployment = build({"model": "/m/bark-small-onnx", "threads": 2, "providers": "cuda,cpu", "gpus": 0.5,
                        "max_batch": 4, "max_queue": 4, "autoscale": "1:3"})._bound_deployment
    (replica_plan,) = deployment.init_args
    assert replica_plan.providers == ("cuda", "cpu") and replica_plan.replica_gpus == 0.5
    assert replica_plan.settings.model_name == "bark-small-onnx" and replica_plan.settings.api_key == "from-env"
    assert deployment.ray_actor_options == {"num_cpus": 2, "num_gpus": 0.5}
    assert deployment.max_ongoing_requests == 8


@pytest.mark.parametrize("args, message", [({}, "model is required"), ({"model": "m", "replica": 2}, "unknown args"),
                                           ({"model": "m", "autoscale": "x"}, "MIN:MAX")])
def test_build_refuses_bad_args(args, message):
    with pytest.raises(InputError, match=message):
        build(args)


def test_every_response_names_its_replica():
    sent = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"a", b"1")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def record(message):
        sent.append(message)

    asyncio.run(ReplicaHeader(app, "r1")({"type": "http"}, None, record))
    assert sent[0]["headers"] == [(b"a", b"1"), (REPLICA_HEADER.encode(), b"r1")]
    assert sent[1] == {"type": "http.response.body", "body": b"ok"}


def test_health_check_raises_once_the_engine_thread_is_dead():
    check = SpeechReplica.func_or_class.check_health
    replica = types.SimpleNamespace(replica="r1", tts=types.SimpleNamespace(engine=types.SimpleNamespace(alive=True)))
    check(replica)
    replica.tts.engine.alive = False
    with pytest.raises(RuntimeError, match="engine thread has stopped"):
        check(replica)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`bark-onnx serve ARGS`, expected to exit at once; should it start serving instead, it is told to
    stop (SIGTERM: it tears its Ray instance down) before the test fails."""
    proc = subprocess.Popen([sys.executable, "-m", "bark_onnx.cli", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        raise AssertionError(f"serve {' '.join(args)} did not exit by itself:\n{err[-3000:]}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("args, message", [
    (["--replicas", "2"], "--replicas only apply with --ray"),
    (["--ray-address", "127.0.0.1:6379", "--gpus-per-replica", "1"], "--ray-address, --gpus-per-replica only apply"),
    (["--ray", "--autoscale", "3:1"], "MIN:MAX"),
    (["--ray", "--replicas", "0"], "replicas must be a positive integer"),
    (["--ray", "--threads", "0"], "not a positive number of threads"),
])
def test_serve_refuses_bad_ray_options_before_starting_anything(args, message, model_dirs):
    proc = run_cli("--model", str(model_dirs["suno-tiny"]), "--port", "0", *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_replicas_and_autoscale_exclude_each_other(model_dirs):
    proc = run_cli("--model", str(model_dirs["suno-tiny"]), "--ray", "--replicas", "2", "--autoscale", "1:2")
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr


def test_a_wrong_model_fails_before_ray_starts(tmp_path):
    proc = run_cli("--model", str(tmp_path / "missing"), "--ray", "--port", "0")
    assert proc.returncode == 2 and "missing" in proc.stderr and "Ray at" not in proc.stderr, proc.stderr


def test_bench_serve_starts_serve_ray_for_replicas():
    from argparse import Namespace

    from bark_onnx.benchmarks.serve_load import server_args

    args = Namespace(max_batch=4, max_queue=8, threads=1, replicas=2)
    assert server_args(args) == ["--max-batch", "4", "--max-queue", "8", "--threads", "1", "--ray", "--replicas", "2"]
    assert "--ray" not in server_args(Namespace(max_batch=4, max_queue=8, threads=None, replicas=None))


class _FakeServe:
    """Stands in for ray.serve: the proxy's bind fails `fails` times, then starts."""

    def __init__(self, fails: int):
        self.fails, self.ports, self.shutdowns = fails, [], 0

    def start(self, http_options, **kwargs):
        self.ports.append(http_options["port"])
        if len(self.ports) <= self.fails:
            raise RuntimeError(f"ray::ProxyActor.ready() Failed to bind to address '127.0.0.1:{self.ports[-1]}'.")

    def shutdown(self):
        self.shutdowns += 1


def test_a_port_taken_before_the_proxy_binds_is_picked_again():
    from bark_onnx.errors import BarkOnnxError
    from bark_onnx.server.ray_command import _start_serve

    serve = _FakeServe(fails=1)
    port = _start_serve(serve, "127.0.0.1", 1, any_port=True, local=True, verbose=False)
    assert serve.ports[0] == 1 and port == serve.ports[1] != 1 and serve.shutdowns == 1
    with pytest.raises(BarkOnnxError, match="did not start on 127.0.0.1:"):  # every try fails
        _start_serve(_FakeServe(fails=5), "127.0.0.1", 1, any_port=True, local=True, verbose=False)
    serve = _FakeServe(fails=1)  # a port the user named is not replaced
    with pytest.raises(BarkOnnxError, match="did not start on 127.0.0.1:8123"):
        _start_serve(serve, "127.0.0.1", 8123, any_port=False, local=True, verbose=False)
    assert serve.ports == [8123]
