"""`bark-onnx serve`: load the model, serve the app with uvicorn, drain on SIGTERM, exit 0.

On SIGTERM (or Ctrl-C) the server stops accepting connections, answers 503
to new requests on open ones, lets the requests in flight finish for up to
--drain-timeout seconds (then cancels them), closes the model and exits 0.
With --ray the same app runs as a Ray Serve application, one model per
replica (ray_command.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

from ..cli_runtime import threads_type
from ..errors import BarkOnnxError
from .ray_command import add_arguments as add_ray_arguments, check_arguments as check_ray_arguments

logger = logging.getLogger(__name__)

SERVE_HINT = "serve needs the serve extra: pip install 'bark-onnx[serve]'"


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="an OpenAI-compatible speech server (POST /v1/audio/speech)",
                       description="Serve a model over HTTP with OpenAI's speech API, a try-it page at /, "
                                   "/health, /ready and /metrics.")
    p.add_argument("--model", help="model directory or hub id org/name (default: suno/bark-small exported to "
                                   "the cache on first use)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port; the one taken is printed)")
    p.add_argument("--max-batch", type=int, default=8, help="requests generated together")
    p.add_argument("--max-queue", type=int, default=64, help="requests that may wait beyond those (more: 429)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 (default: $BARK_ONNX_API_KEY)")
    p.add_argument("--max-input-chars", type=int, default=4096, help="longest input accepted (OpenAI's 4096)")
    p.add_argument("--request-timeout", type=float, default=600.0,
                   help="seconds a request may take before it is cancelled (504, or its stream is cut)")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="seconds the requests in flight may take to finish after SIGTERM")
    p.add_argument("--served-model-name", help="the model name clients send (default: the model's folder name)")
    p.add_argument("--instance", help="this server's name in the X-Bark-Onnx-Instance header (default: host name)")
    p.add_argument("--providers", help="comma-separated execution providers, e.g. cuda,cpu (default: best available)")
    p.add_argument("--threads", type=threads_type, help="CPU threads per session (default: the cores available; with --ray: "
                                               "1, and each replica reserves that many CPUs)")
    add_ray_arguments(p)
    p.set_defaults(func=run)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (0: a free port), or a BarkOnnxError saying what to change."""
    if not 0 <= port <= 65535:
        raise BarkOnnxError(f"--port must lie in [0, 65535], got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as err:
        raise BarkOnnxError(f"cannot listen on {host}:{port} ({err.strerror or err}); "
                            "pick another --port or --host") from None


def _served_name(args) -> str:
    if args.served_model_name:
        return args.served_model_name
    return Path(args.model.rstrip("/")).name if args.model else "bark-small"


def run(args: argparse.Namespace) -> int:
    try:
        from .app import create_app
        from .runner import DrainingServer, uvicorn_config
    except ImportError as err:
        raise BarkOnnxError(f"{SERVE_HINT} ({err})") from None
    from ..bark import Bark
    from ..providers import provider_names
    from .settings import ServerSettings

    settings = ServerSettings(
        model_name=_served_name(args), api_key=args.api_key or os.environ.get("BARK_ONNX_API_KEY") or None,
        max_input_chars=args.max_input_chars, request_timeout_s=args.request_timeout,
        **({"instance": args.instance} if args.instance else {}))
    if args.drain_timeout < 0:
        raise BarkOnnxError(f"--drain-timeout must be a number of seconds >= 0, got {args.drain_timeout}")
    check_ray_arguments(args)
    if args.ray:
        from .ray_command import run_ray

        return run_ray(args, settings)
    sock = listen(args.host, args.port)  # first: a port in use fails before minutes of loading
    try:
        if args.model:
            model = args.model
        else:
            from ..cache import ensure_model

            model = ensure_model(small=True, progress=True)
        tts = Bark.load(model, providers=provider_names(args.providers), threads=args.threads, max_batch=args.max_batch,
                        max_queue=args.max_queue)
    except BaseException:
        sock.close()
        raise
    app = create_app(tts, settings)
    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    server = DrainingServer(uvicorn_config(app, args.drain_timeout), app.state.bark,
                            f"bark-onnx: serving {settings.model_name} on {url}")
    try:
        server.run(sockets=[sock])
    finally:
        tts.close(timeout=args.drain_timeout)
    print("bark-onnx: stopped", file=sys.stderr, flush=True)
    return 0
