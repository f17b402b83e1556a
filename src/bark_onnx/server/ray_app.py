"""The speech server as a Ray Serve application: one engine per replica, Serve's router in front.

Each replica loads the model once (one engine, batched step by step) and
mounts the app of `bark-onnx serve` (`create_app`) through Serve's FastAPI
ingress; every response names the replica that answered in `x-bark-replica`.
Serve's proxies route each request to the less loaded of two replicas, never
past a replica's `max_ongoing_requests` (its engine's batch plus queue), and
shed what no replica can hold with 429 and Retry-After. A replica whose
engine thread has died fails its health check and is replaced.

Two ways in, one `ServerSettings`: `bark-onnx serve --ray` deploys
`application(settings)` on a local Ray or a cluster (ray_command.py); `serve
deploy deploy/serve-config.yaml` imports `bark_onnx.server.ray_app:build` with
the config's `args`. Needs the ray extra.
"""

from __future__ import annotations

import logging

from ray import serve

from ..runtime.errors import InputError
from .launch import load_model
from .settings import ServerSettings

logger = logging.getLogger(__name__)

REPLICA_HEADER = "x-bark-replica"
DEPLOYMENT = "BarkSpeech"
APP_NAME = "bark"
# A replica whose model cannot load fails the deployment after this many tries, instead of Serve's 20.
CONSTRUCTOR_RETRIES = 3


def deployment_options(settings: ServerSettings) -> dict:
    """Serve's options for the deployment: replica resources, the request limits tied to the engine,
    health checks, graceful shutdown, and either a fixed replica count or autoscaling."""
    actor = {"num_cpus": settings.session_threads}
    if settings.replica_gpus:
        actor["num_gpus"] = settings.replica_gpus
    options = {
        "ray_actor_options": actor,
        # a replica takes what its engine holds (as one `bark-onnx serve`), so its engine never sheds a
        # routed request. Serve counts a request as queued until it is assigned, bursts included, so
        # each proxy may hold as many as all replicas together (a burst they can take is never shed);
        # past that it answers 429 with Retry-After
        "max_ongoing_requests": settings.capacity,
        "max_queued_requests": settings.most_replicas * settings.capacity,
        "backpressure_config": {"status_code": 429, "retry_after_s": settings.retry_after},
        "graceful_shutdown_timeout_s": float(settings.drain_timeout),
        "health_check_period_s": 5.0,
        "health_check_timeout_s": 30.0,
        "max_constructor_retry_count": CONSTRUCTOR_RETRIES,
    }
    if settings.autoscale is None:
        options["num_replicas"] = settings.most_replicas
    else:
        low, high = settings.autoscale
        # scale out when the replicas hold more than a full batch each on average (requests wait)
        options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high, "initial_replicas": max(low, 1),
                                         "target_ongoing_requests": settings.max_batch}
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

    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.tts = load_model(settings, settings.model)
        self.speech_app = None  # `app` is the ingress wrapper's own
        logger.info("replica %s: %s loaded on %s", self.replica, settings.model, ", ".join(self.tts.active_providers()))

    def __serve_build_asgi_app__(self):
        from .app import create_app

        self.speech_app = create_app(self.tts, self.settings)
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


def application(settings: ServerSettings):
    """The Serve application: `serve.run(application(settings), name=APP_NAME)`; settings.model must be
    given (a model directory at the same path on every node, or a hub id)."""
    if not settings.model:
        raise InputError("a Ray Serve deployment needs its model: a model directory present on every node, or a "
                         "hub id", "model")
    return SpeechReplica.options(**deployment_options(settings)).bind(settings)


def build(args: dict):
    """The application builder for Serve config files (`import_path: bark_onnx.server.ray_app:build`).

    args: the keys of ServerSettings (those of `bark-onnx serve`'s options: model, providers,
    threads, gpus_per_replica, max_batch, max_queue, served_model_name, api_key (else
    $BARK_ONNX_API_KEY where the application is built), max_input_chars, request_timeout,
    instance, offline, replicas or autoscale, drain_timeout). host and port are the config's
    http_options. The config's `deployments:` entry for BarkSpeech overrides what these set
    (num_replicas, ray_actor_options, ...).
    """
    return application(ServerSettings.from_dict({**dict(args or {}), "ray": True}, "the application's args"))
