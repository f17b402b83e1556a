"""The speech server as a Ray Serve application: one engine per replica, Serve's router in front.

Each replica loads the model once (one engine, batched step by step) and
mounts the app of `bark-onnx serve` (`create_app`) through Serve's FastAPI
ingress; every response names the replica that answered in `x-bark-replica`.
Serve's proxies route each request to the less loaded of two replicas, never
past a replica's `max_ongoing_requests` (its engine's batch plus queue), and
shed what no replica can hold with 429 and Retry-After. A replica whose
engine thread has died fails its health check and is replaced.

Two ways in: `bark-onnx serve --ray` deploys `application(...)` on a local Ray
or a cluster (ray_command.py); `serve deploy deploy/serve-config.yaml` imports
`bark_onnx.server.ray_app:build` with the config's `args`. Needs the ray extra.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, replace

from ray import serve

from ..errors import InputError
from ..providers import names_a_gpu, provider_names
from .settings import ServerSettings

logger = logging.getLogger(__name__)

REPLICA_HEADER = "x-bark-replica"
DEPLOYMENT = "BarkSpeech"
APP_NAME = "bark"
# A replica whose model cannot load fails the deployment after this many tries, instead of Serve's 20.
CONSTRUCTOR_RETRIES = 3


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{what} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class ReplicaPlan:
    """What every replica loads and reserves.

    model: a model directory (at the same path on every node) or a hub id. providers: as
    `Bark.load` takes them (None: CUDA where it starts, then the CPU). threads: CPU threads per
    session, and the CPUs each replica reserves (`num_cpus`). gpus: the GPUs each replica reserves,
    fractional allowed (None: 1 when the providers name CUDA or TensorRT, else 0). max_batch and
    max_queue: the engine's, as `bark-onnx serve` takes them. settings: the app's; `instance` None
    names each replica's instance after its node's host name.
    """

    model: str
    settings: ServerSettings
    providers: tuple[str, ...] | None = None
    threads: int = 1
    gpus: float | None = None
    max_batch: int = 8
    max_queue: int = 64
    instance: str | None = None
    offline: bool = False

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model:
            raise InputError("model must be a model directory or a hub id (org/name)")
        _positive_int(self.threads, "threads")
        _positive_int(self.max_batch, "max_batch")
        if isinstance(self.max_queue, bool) or not isinstance(self.max_queue, int) or self.max_queue < 0:
            raise InputError(f"max_queue must be a non-negative integer, got {self.max_queue!r}")
        if self.gpus is not None and (isinstance(self.gpus, bool) or not isinstance(self.gpus, (int, float))
                                      or not self.gpus >= 0):
            raise InputError(f"gpus per replica must be a number >= 0 (fractions share a GPU), got {self.gpus!r}")

    @property
    def replica_gpus(self) -> float:
        if self.gpus is not None:
            return float(self.gpus)
        return 1.0 if names_a_gpu(self.providers) else 0.0

    @property
    def capacity(self) -> int:
        """The requests one replica's engine holds: generating, then waiting."""
        return self.max_batch + self.max_queue


def parse_autoscale(text: str) -> tuple[int, int]:
    """'MIN:MAX' -> (MIN, MAX), with 0 <= MIN <= MAX and MAX >= 1."""
    low, sep, high = str(text).partition(":")
    try:
        pair = (int(low), int(high))
    except ValueError:
        pair = None
    if not sep or pair is None or pair[0] < 0 or pair[1] < 1 or pair[0] > pair[1]:
        raise InputError(f"autoscale takes MIN:MAX replicas with 0 <= MIN <= MAX and MAX >= 1, got {text!r}")
    return pair


def deployment_options(plan: ReplicaPlan, replicas: int = 1, autoscale: tuple[int, int] | None = None,
                       drain_timeout_s: float = 30.0) -> dict:
    """Serve's options for the deployment: replica resources, the request limits tied to the engine,
    health checks, graceful shutdown, and either a fixed replica count or autoscaling."""
    if not isinstance(drain_timeout_s, (int, float)) or isinstance(drain_timeout_s, bool) or drain_timeout_s < 0:
        raise InputError(f"drain timeout must be a number of seconds >= 0, got {drain_timeout_s!r}")
    if autoscale is None:
        most = _positive_int(replicas, "replicas")
    else:
        most = autoscale[1]
    actor = {"num_cpus": plan.threads}
    if plan.replica_gpus:
        actor["num_gpus"] = plan.replica_gpus
    options = {
        "ray_actor_options": actor,
        # a replica takes what its engine holds (as one `bark-onnx serve`), so its engine never sheds a
        # routed request. Serve counts a request as queued until it is assigned, bursts included, so
        # each proxy may hold as many as all replicas together (a burst they can take is never shed);
        # past that it answers 429 with Retry-After
        "max_ongoing_requests": plan.capacity,
        "max_queued_requests": most * plan.capacity,
        "backpressure_config": {"status_code": 429, "retry_after_s": plan.settings.retry_after_s},
        "graceful_shutdown_timeout_s": float(drain_timeout_s),
        "health_check_period_s": 5.0,
        "health_check_timeout_s": 30.0,
        "max_constructor_retry_count": CONSTRUCTOR_RETRIES,
    }
    if autoscale is None:
        options["num_replicas"] = most
    else:
        low, high = autoscale
        # scale out when the replicas hold more than a full batch each on average (requests wait)
        options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high, "initial_replicas": max(low, 1),
                                         "target_ongoing_requests": plan.max_batch}
    return options


class ReplicaHeader:
    """ASGI middleware: every response names the replica that made it."""

    def __init__(self, app, replica: str):
        self.app = app
        self.header = (REPLICA_HEADER.encode(), replica.encode("latin-1", "replace"))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def named_send(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, named_send)


@serve.deployment(name=DEPLOYMENT)
@serve.ingress()
class SpeechReplica:
    """One replica: one loaded model, the server's app around it (built once the model is loaded)."""

    def __init__(self, plan: ReplicaPlan):
        from ..bark import Bark

        self.plan = plan
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.tts = Bark.load(plan.model, providers=list(plan.providers) if plan.providers else None,
                             threads=plan.threads, max_batch=plan.max_batch, max_queue=plan.max_queue,
                             offline=plan.offline)
        self.speech_app = None  # `app` is the ingress wrapper's own
        logger.info("replica %s: %s loaded on %s", self.replica, plan.model, ", ".join(self.tts.active_providers()))

    def __serve_build_asgi_app__(self):
        from .app import create_app

        settings = replace(self.plan.settings, instance=self.plan.instance or socket.gethostname())
        self.speech_app = create_app(self.tts, settings)
        self.speech_app.add_middleware(ReplicaHeader, replica=self.replica)
        return self.speech_app

    def check_health(self) -> None:
        """Serve calls this every few seconds; raising marks the replica unhealthy and has it replaced."""
        if not self.tts.engine.alive:
            raise RuntimeError(f"replica {self.replica}: the engine thread has stopped")

    def __del__(self):
        # Serve has stopped routing here and waited up to the drain timeout for the requests in flight;
        # what still runs is cancelled (its client sees a cut stream)
        if getattr(self, "speech_app", None) is not None:
            self.speech_app.state.bark.draining = True
        if getattr(self, "tts", None) is not None:
            self.tts.close(timeout=0)


def application(plan: ReplicaPlan, replicas: int = 1, autoscale: tuple[int, int] | None = None,
                drain_timeout_s: float = 30.0):
    """The Serve application: `serve.run(application(plan, replicas=2), name=APP_NAME)`."""
    return SpeechReplica.options(**deployment_options(plan, replicas, autoscale, drain_timeout_s)).bind(plan)


def build(args: dict):
    """The application builder for Serve config files (`import_path: bark_onnx.server.ray_app:build`).

    args: model (required); providers (a list or "cuda,cpu"), threads, gpus, max_batch, max_queue,
    served_model_name, api_key (else $BARK_ONNX_API_KEY on the replicas' nodes), max_input_chars,
    request_timeout, instance, offline; replicas or autoscale ("MIN:MAX"), drain_timeout. The
    config's `deployments:` entry for BarkSpeech overrides what these set (num_replicas,
    ray_actor_options, ...).
    """
    args = dict(args or {})
    known = {"model", "providers", "threads", "gpus", "max_batch", "max_queue", "served_model_name", "api_key",
             "max_input_chars", "request_timeout", "instance", "offline", "replicas", "autoscale", "drain_timeout"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise InputError(f"unknown args {unknown} for bark_onnx.server.ray_app:build; it takes {sorted(known)}")
    if "model" not in args:
        raise InputError("args.model is required: a model directory present on every node, or a hub id")
    model = str(args["model"])
    settings = ServerSettings(
        model_name=str(args.get("served_model_name") or os.path.basename(model.rstrip("/")) or "bark"),
        api_key=args.get("api_key") or os.environ.get("BARK_ONNX_API_KEY") or None,
        max_input_chars=args.get("max_input_chars", 4096),
        request_timeout_s=float(args.get("request_timeout", 600.0)))
    plan = ReplicaPlan(model, settings, providers=provider_names(args.get("providers")), threads=args.get("threads", 1),
                       gpus=args.get("gpus"), max_batch=args.get("max_batch", 8), max_queue=args.get("max_queue", 64),
                       instance=args.get("instance"), offline=bool(args.get("offline", False)))
    autoscale = parse_autoscale(args["autoscale"]) if args.get("autoscale") else None
    return application(plan, args.get("replicas", 1), autoscale, args.get("drain_timeout", 30.0))
