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

from bark_onnx.runtime.errors import InputError
from bark_onnx.server.ray_app import DEPLOYMENT, REPLICA_HEADER, ReplicaHeader, SpeechReplica, build, deployment_options
from bark_onnx.server.settings import ServerSettings, parse_autoscale

ROOT = Path(__file__).resolve().parents[1]


def settings(**overrides) -> ServerSettings:
    return ServerSettings(**{"model": "/models/m", "served_model_name": "m", "instance": "here", "ray": True,
                             **overrides})


def test_replicas_reserve_their_threads_and_take_what_their_engine_holds():
    options = deployment_options(settings(threads=3, max_batch=8, max_queue=24, replicas=2, drain_timeout=12))
    assert options["num_replicas"] == 2
    assert options["ray_actor_options"] == {"num_cpus": 3}  # no GPU asked for: none reserved
    assert options["max_ongoing_requests"] == 32  # max batch + max queue: the engine never sheds a routed request
    assert options["max_queued_requests"] == 64  # a burst both replicas can take is never shed while routed
    assert options["backpressure_config"] == {"status_code": 429, "retry_after_s": 1}
    assert options["graceful_shutdown_timeout_s"] == 12.0
    assert "autoscaling_config" not in options
    assert deployment_options(settings())["ray_actor_options"] == {"num_cpus": 1}  # one thread by default on Ray


@pytest.mark.parametrize("providers, gpus, expected", [
    (("cuda", "cpu"), None, 1.0), (("TensorRT", "cuda", "cpu"), None, 1.0), (("CUDAExecutionProvider",), None, 1.0),
    (("cpu",), None, 0.0), (None, None, 0.0), (("cuda", "cpu"), 0.25, 0.25), (None, 0.5, 0.5), (("cuda",), 0, 0.0),
    ("cuda,cpu", None, 1.0),
])
def test_gpus_per_replica_follow_the_providers_unless_given(providers, gpus, expected):
    options = deployment_options(settings(providers=providers, gpus_per_replica=gpus))
    assert options["ray_actor_options"].get("num_gpus", 0.0) == expected


def test_autoscaling_on_the_requests_in_flight():
    options = deployment_options(settings(max_batch=4, max_queue=4, autoscale="0:3"))
    assert "num_replicas" not in options
    assert options["autoscaling_config"] == {"min_replicas": 0, "max_replicas": 3, "initial_replicas": 1,
                                             "target_ongoing_requests": 4}
    assert options["max_queued_requests"] == 3 * 8  # sized for the most replicas


def test_serve_takes_the_options():
    for options in (deployment_options(settings(max_queue=0, replicas=1)),
                    deployment_options(settings(providers=("cuda",), autoscale=(1, 4), drain_timeout=0))):
        deployment = SpeechReplica.options(**options)  # Serve checks every option here
        assert deployment.name == DEPLOYMENT
        assert deployment.max_ongoing_requests == options["max_ongoing_requests"]
        assert deployment.max_queued_requests == options["max_queued_requests"]
        assert deployment.ray_actor_options == options["ray_actor_options"]
    config = SpeechReplica.options(**deployment_options(settings(autoscale="1:4")))._deployment_config
    assert (config.autoscaling_config.min_replicas, config.autoscaling_config.max_replicas) == (1, 4)


@pytest.mark.parametrize("text", ["3", "a:b", "2:1", "-1:2", "0:0", ":", "1:2:3"])
def test_autoscale_takes_min_colon_max(text):
    with pytest.raises(InputError, match="MIN:MAX"):
        parse_autoscale(text)
    with pytest.raises(InputError, match="MIN:MAX"):
        settings(autoscale=text)


def test_autoscale_parses():
    assert parse_autoscale("1:4") == (1, 4) and parse_autoscale("0:2") == (0, 2) and parse_autoscale((1, 2)) == (1, 2)


@pytest.mark.parametrize("overrides, message", [
    ({"threads": 0}, "threads"), ({"max_batch": 0}, "max_batch"), ({"max_queue": -1}, "max_queue"),
    ({"gpus_per_replica": -0.5}, "gpus_per_replica"), ({"gpus_per_replica": "one"}, "gpus_per_replica"),
    ({"model": ""}, "model"), ({"replicas": 0}, "replicas"), ({"drain_timeout": -1}, "drain_timeout"),
    ({"replicas": 2, "autoscale": "1:2"}, "not both"), ({"port": 70000}, "port"),
    ({"ray": False, "replicas": 2}, "--replicas only apply with --ray"),
])
def test_bad_settings_say_what_is_accepted(overrides, message):
    with pytest.raises(InputError, match=message):
        settings(**overrides)


def test_one_settings_object_from_arguments_a_file_or_a_dict(tmp_path, monkeypatch):
    import argparse
    import json

    from bark_onnx.runtime.commands import Parser
    from bark_onnx.server.command import add_parser

    parser = Parser(prog="bark-onnx")
    add_parser(parser.add_subparsers(dest="command"))
    monkeypatch.delenv("BARK_ONNX_API_KEY", raising=False)
    defaults = ServerSettings.from_args(parser.parse_args(["serve"]))
    assert defaults == ServerSettings() and defaults.model_name == "bark-small" and defaults.session_threads is None
    config = tmp_path / "serve.json"
    config.write_text(json.dumps({"model": "/models/bark-fp16/", "max_batch": 16, "port": 9000, "ray": True,
                                  "autoscale": "1:4"}))
    both = ServerSettings.from_args(parser.parse_args(["serve", "--config", str(config), "--port", "9100"]))
    assert (both.max_batch, both.port, both.autoscale, both.model_name) == (16, 9100, (1, 4), "bark-fp16")
    assert both.session_threads == 1  # on Ray, one thread per replica unless given
    toml = tmp_path / "serve.toml"
    toml.write_text('model = "/m"\nmax_queue = 3\n')
    assert ServerSettings.from_file(toml).max_queue == 3
    monkeypatch.setenv("BARK_ONNX_API_KEY", "from-env")
    assert ServerSettings.from_dict({}).api_key == "from-env" and ServerSettings.from_dict({"api_key": "k"}).api_key == "k"
    for bad, message in (({"max_batchh": 1}, "unknown key"), ([1], "table")):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(Exception, match=message):
            ServerSettings.from_file(path)
    with pytest.raises(Exception, match=".json or .toml"):
        ServerSettings.from_file(tmp_path / "serve.yaml")
    assert isinstance(parser, argparse.ArgumentParser)


def test_the_config_file_builds_the_application():
    config = yaml.safe_load((ROOT / "deploy" / "serve-config.yaml").read_text())
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema(**config)  # what `serve deploy` checks first
    (app,) = config["applications"]
    assert app["import_path"] == "bark_onnx.server.ray_app:build"
    deployment = build(app["args"])._bound_deployment
    assert deployment.name == DEPLOYMENT == app["deployments"][0]["name"]
    (built,) = deployment.init_args
    assert built.model == app["args"]["model"] and built.threads == app["args"]["threads"]


def test_build_takes_the_serve_options_as_args(monkeypatch):
    monkeypatch.setenv("BARK_ONNX_API_KEY", "from-env")
    deployment = build({"model": "/m/bark-small-onnx", "threads": 2, "providers": "cuda,cpu", "gpus_per_replica": 0.5,
                        "max_batch": 4, "max_queue": 4, "autoscale": "1:3"})._bound_deployment
    (built,) = deployment.init_args
    assert built.providers == ("cuda", "cpu") and built.replica_gpus == 0.5
    assert built.model_name == "bark-small-onnx" and built.api_key == "from-env"
    assert deployment.ray_actor_options == {"num_cpus": 2, "num_gpus": 0.5}
    assert deployment.max_ongoing_requests == 8


@pytest.mark.parametrize("args, message", [({}, "needs its model"), ({"model": "m", "replica": 2}, "unknown key"),
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
    from bark_onnx.runtime.errors import BarkOnnxError
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
