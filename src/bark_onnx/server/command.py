"""`bark-onnx serve`: load the model, serve the app with uvicorn, drain on SIGTERM, exit 0.

Its arguments (and `--config FILE`) become one `ServerSettings` (settings.py). On
SIGTERM (or Ctrl-C) the server stops accepting connections, answers 503 to new
requests on open ones, lets the requests in flight finish for up to
--drain-timeout seconds (then cancels them), closes the model and exits 0. With
--ray the same app runs as a Ray Serve application, one model per replica
(ray_command.py).
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..runtime.commands import threads_type
from ..runtime.errors import BarkOnnxError
from ..runtime.model.cache import Exporter
from .launch import listen, load_model
from .settings import ServerSettings

logger = logging.getLogger(__name__)

SERVE_HINT = "serve needs the serve extra: pip install 'bark-onnx[serve]'"


def add_parser(sub, exporter: Exporter | None = None) -> None:
    """The arguments; each defaults to None (not given), so ServerSettings holds every default.
    `exporter` makes the default model when it is not in the cache (cli.py hands it down)."""
    p = sub.add_parser("serve", help="an OpenAI-compatible speech server (POST /v1/audio/speech)",
                       description="Serve a model over HTTP with OpenAI's speech API, a try-it page at /, "
                                   "/health, /ready and /metrics. Every option can come from --config too.")
    p.add_argument("--config", help="a JSON or TOML file of settings (keys: the long options' names with "
                                    "underscores); options given here win")
    p.add_argument("--model", help="model directory or hub id org/name (default: suno/bark-small exported to "
                                   "the cache on first use)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0: every interface)")
    p.add_argument("--port", type=int, help="port (default 8000; 0: any free port, the one taken is printed)")
    p.add_argument("--max-batch", type=int, help="requests generated together (default 8)")
    p.add_argument("--max-queue", type=int, help="requests that may wait beyond those; past both, 429 (default 64)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 (default: $BARK_ONNX_API_KEY)")
    p.add_argument("--max-input-chars", type=int, help="longest input accepted (default 4096, OpenAI's)")
    p.add_argument("--request-timeout", type=float,
                   help="seconds a request may take before it is cancelled, 504 or a cut stream (default 600)")
    p.add_argument("--drain-timeout", type=float,
                   help="seconds the requests in flight may take to finish after SIGTERM (default 30)")
    p.add_argument("--served-model-name", help="the model name clients send (default: the model's folder name)")
    p.add_argument("--instance", help="this server's name in the X-Bark-Onnx-Instance header (default: host name)")
    p.add_argument("--providers", help="comma-separated execution providers, e.g. cuda,cpu (default: best available)")
    p.add_argument("--threads", type=threads_type, help="CPU threads per session (default: the cores available; "
                                                        "with --ray: 1, and each replica reserves that many CPUs)")
    p.add_argument("--offline", action="store_true", default=None, help="never use the network")
    g = p.add_argument_group("Ray Serve (--ray): replicas of the server behind Serve's router")
    g.add_argument("--ray", action="store_true", default=None,
                   help="serve as a Ray Serve application: one engine per replica, on a local Ray or a cluster")
    scale = g.add_mutually_exclusive_group()
    scale.add_argument("--replicas", type=int, help="replicas, each with its own engine (default 1)")
    scale.add_argument("--autoscale", metavar="MIN:MAX",
                       help="scale between MIN and MAX replicas on the requests in flight (more than --max-batch "
                            "per replica: scale out)")
    g.add_argument("--ray-address", help="join this Ray cluster (default: $RAY_ADDRESS, else a local Ray instance)")
    g.add_argument("--gpus-per-replica", type=float,
                   help="GPUs each replica reserves, fractions share one (default: 1 when --providers names cuda or "
                        "tensorrt, else 0)")
    p.set_defaults(func=run, exporter=exporter)


def run(args: argparse.Namespace) -> int:
    settings = ServerSettings.from_args(args)  # every value checked before anything starts
    if settings.ray:
        from .ray_command import run_ray

        return run_ray(settings, args.exporter)
    try:
        from .app import create_app
        from .runner import DrainingServer, uvicorn_config
    except ImportError as err:
        raise BarkOnnxError(f"{SERVE_HINT} ({err})") from None
    from ..runtime.model.cache import model_or_default

    sock = listen(settings.host, settings.port)  # first: a port in use fails before minutes of loading
    try:
        model = model_or_default(settings.model, offline=settings.offline, exporter=args.exporter)
        tts = load_model(settings, model)
    except BaseException:
        sock.close()
        raise
    app = create_app(tts, settings)
    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    server = DrainingServer(uvicorn_config(app, settings.drain_timeout), app.state.bark,
                            f"bark-onnx: serving {settings.model_name} on {url}")
    try:
        server.run(sockets=[sock])
    finally:
        tts.close(timeout=settings.drain_timeout)
    print("bark-onnx: stopped", file=sys.stderr, flush=True)
    return 0
