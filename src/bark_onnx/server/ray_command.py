"""`bark-onnx serve --ray`: deploy the speech server on Ray Serve, serve until told to stop, tear down.

Without an address (neither --ray-address nor $RAY_ADDRESS) it starts a local
Ray instance on this machine: loopback only, as many CPUs as the replicas
reserve, a small object store and no dashboard; one Serve proxy on
--host/--port. With an address it joins that cluster and deploys the app there
(a proxy on every node that runs a replica). SIGTERM or Ctrl-C: Serve stops
routing to the replicas, lets their requests in flight finish (up to
--drain-timeout s), then the app is deleted (a local instance is shut down
whole) and the command exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from ..runtime.errors import BarkOnnxError
from ..runtime.model.cache import Exporter, model_or_default
from ..runtime.model.config import ModelConfig
from ..runtime.model.hub import resolve_model_dir
from ..runtime.model.hub import is_offline
from .launch import listen
from .settings import ServerSettings

logger = logging.getLogger(__name__)

RAY_HINT = "serve --ray needs the ray extra: pip install 'bark-onnx[ray]'"
# The local instance's shared-memory object store: requests and audio chunks travel as small
# messages, so Ray's default (30 % of the machine's memory) would only reserve memory.
LOCAL_OBJECT_STORE_BYTES = 128 * 2 ** 20


class _Stop(Exception):
    """A stop signal arrived: leave whatever waits, then tear down."""


def _free_port(host: str, port: int) -> int:
    """`port` if it is free on `host`, a free one for 0; Serve's proxy binds it a moment later."""
    with listen(host, port) as sock:
        return sock.getsockname()[1]


def _model(settings: ServerSettings, local: bool, exporter: Exporter | None) -> str:
    """What the replicas load: on a local instance, the resolved directory (checked here, before any
    replica starts; the default model exported by `exporter` on first use); on a cluster, the path
    or hub id as given (it must exist on every node)."""
    if not settings.model and not local:
        raise BarkOnnxError("with a Ray cluster, give --model: a model directory at the same path on every "
                            "node, or the hub id of an exported model")
    if not local:
        path = Path(settings.model).expanduser()
        return str(path.resolve()) if path.exists() else settings.model
    model_dir = resolve_model_dir(model_or_default(settings.model, offline=settings.offline, exporter=exporter),
                                  settings.offline)
    ModelConfig.load(model_dir)  # a wrong directory fails now, with the loader's message
    return str(Path(model_dir).resolve())


def _raise_stop(sig, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second signal ends the process at once
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(f"bark-onnx: signal {sig}: draining the requests in flight", file=sys.stderr, flush=True)
    raise _Stop


def _start_ray(ray, address: str | None, cpus: int, verbose: bool) -> None:
    try:
        if address is None:
            ray.init(address="local", num_cpus=cpus, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                     include_dashboard=False, log_to_driver=verbose, logging_level=logging.WARNING)
        else:
            ray.init(address=address, log_to_driver=verbose, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError) as err:
        where = f"join the Ray cluster at {address}" if address else "start a local Ray instance"
        raise BarkOnnxError(f"cannot {where} ({' '.join(str(err).split())[:300]}); check the address, and for a "
                            "cluster with token authentication set RAY_AUTH_MODE=token and its token") from None


def run_ray(settings: ServerSettings, exporter: Exporter | None = None) -> int:
    address = settings.ray_address or os.environ.get("RAY_ADDRESS") or None
    local = address is None
    if local:  # read when ray is imported: every process of the local instance binds loopback only
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
        from ray import serve

        from .ray_app import APP_NAME, application
    except ImportError as err:
        raise BarkOnnxError(f"{RAY_HINT} ({err})") from None

    # the replicas follow this command's offline switch, and load what was checked here
    settings = replace(settings, model=_model(settings, local, exporter), offline=is_offline(settings.offline))
    app = application(settings)
    port = _free_port(settings.host, settings.port)
    most, threads = settings.most_replicas, settings.session_threads
    verbose = logging.getLogger().isEnabledFor(logging.INFO)
    if local and most * threads > (os.cpu_count() or 1):
        logger.warning("%d replicas of %d threads oversubscribe this machine's %d cores", most, threads,
                       os.cpu_count() or 1)

    originals = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _start_ray(ray, address, most * threads, verbose)
        for sig in originals:  # ray.init installs its own fatal-signal handlers: ours again
            signal.signal(sig, _raise_stop)
        if not verbose:
            logging.getLogger("ray.serve").setLevel(logging.WARNING)
        _check_gpus(ray, settings.replica_gpus * most, local)
        port = _start_serve(serve, settings.host, port, settings.port == 0, local, verbose)
        where = "a local Ray instance" if local else f"the Ray cluster at {address}"
        scale = (f"{settings.autoscale[0]} to {settings.autoscale[1]} replicas" if settings.autoscale
                 else f"{most} replicas")
        print(f"bark-onnx: Ray at {ray.get_runtime_context().gcs_address}; deploying {scale} on {where}",
              file=sys.stderr, flush=True)
        try:
            serve.run(app, name=APP_NAME, route_prefix="/")
        except RuntimeError as err:
            raise BarkOnnxError(f"the deployment failed: {' '.join(str(err).split())[:600]} (the replicas' logs "
                                "say why: run with -v)") from None
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        print(f"bark-onnx: serving {settings.model_name} on http://{host}:{port}", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)  # until a signal raises _Stop
    except _Stop:
        pass
    finally:
        try:
            if ray.is_initialized():
                _tear_down(ray, serve, local, APP_NAME)
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)
    print("bark-onnx: stopped", file=sys.stderr, flush=True)
    return 0


def _start_serve(serve, host: str, port: int, any_port: bool, local: bool, verbose: bool, tries: int = 3) -> int:
    """Serve's HTTP proxy on host:port; returns the port. With --port 0 the free port was picked
    before Ray's own processes took theirs, so one of them may hold it by now: pick again then."""
    attempt = 1
    while True:
        try:
            serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly" if local else None,
                        logging_config={"log_level": "INFO" if verbose else "WARNING"})
            return port
        except Exception as err:  # Ray wraps the proxy's failure in its own task error types
            if not any_port or "bind" not in str(err).lower() or attempt == tries:
                raise BarkOnnxError(f"Serve's HTTP proxy did not start on {host}:{port}: "
                                    f"{' '.join(str(err).split())[-300:]}") from None
            logger.warning("port %d was taken before Serve's proxy bound it; trying another", port)
            serve.shutdown()
            port = _free_port(host, 0)
            attempt += 1


def _check_gpus(ray, needed: float, local: bool) -> None:
    """On a local instance, replicas that reserve more GPUs than the machine has would wait forever."""
    have = ray.cluster_resources().get("GPU", 0)
    if local and needed > have:
        raise BarkOnnxError(f"the replicas reserve {needed:g} GPUs and Ray sees {have:g} on this machine: lower "
                            "--gpus-per-replica or --replicas, or join a cluster with --ray-address")


def _tear_down(ray, serve, local: bool, app_name: str) -> None:
    """Serve drains the replicas (up to the drain timeout each) as it removes them."""
    try:
        if local:
            serve.shutdown()
        else:
            serve.delete(app_name)
    finally:
        ray.shutdown()
