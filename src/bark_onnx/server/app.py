"""The FastAPI app: `create_app(tts, settings)` around a model that its owner loads and closes.

Routes: POST /v1/audio/speech, GET /v1/models, GET /v1/audio/voices (these need
the API key when one is set), GET /health, GET /ready, GET /metrics, and GET /,
a page to try the voices in a browser.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from ..version import __version__
from .encoding import MEDIA_TYPES
from .errors import ApiError, error_body, install_handlers
from .metrics import Metrics
from .middleware import Guard
from .page import PAGE
from .settings import ServerSettings
from .speech import speech

logger = logging.getLogger(__name__)


@dataclass
class ServerState:
    """What the routes share: the model, the settings, the preset names, the metrics, and whether the
    server is draining (set by whoever runs it when it is told to stop)."""

    tts: Any
    settings: ServerSettings
    voices: frozenset[str]
    metrics: Metrics
    created: int
    draining: bool = False


def _key_check(settings: ServerSettings):
    async def require_key(request: Request) -> None:
        if settings.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(),
                                                                    settings.api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    return require_key


def _v1_routes(state: ServerState) -> APIRouter:
    router = APIRouter(prefix="/v1", dependencies=[Depends(_key_check(state.settings))])
    router.add_api_route("/audio/speech", speech, methods=["POST"], response_class=Response,
                         responses={200: {"content": {m: {} for m in [*MEDIA_TYPES.values(), "text/event-stream"]},
                                          "description": "the audio, streamed for pcm, wav and SSE"}},
                         summary="Speak a text (OpenAI's speech API)")

    def model_card(name: str) -> dict:
        served = name == state.settings.model_name
        return {"id": name, "object": "model", "created": state.created, "owned_by": "bark-onnx",
                "root": state.settings.model_name, "alias": not served}

    @router.get("/models", summary="The served model and the aliases `model` may name")
    async def models():
        return {"object": "list", "data": [model_card(n) for n in state.settings.model_names]}

    @router.get("/models/{model_id:path}", summary="One model")
    async def model(model_id: str):
        if model_id not in state.settings.model_names:
            raise ApiError(404, f"model {model_id!r} is not served here", param="model", code="model_not_found")
        return model_card(model_id)

    @router.get("/audio/voices", summary="The voice presets `voice` may name")
    async def voices():
        return {"voices": sorted(state.voices)}

    return router


def create_app(tts, settings: ServerSettings | None = None) -> FastAPI:
    """The server's app around a loaded `Bark` (anything with its submit, stats, voices, engine and
    sample_rate). It neither loads nor closes the model; set `app.state.bark.draining = True` to refuse
    new speech requests (503) while the ones in flight finish."""
    settings = settings or ServerSettings()
    metrics = Metrics(tts.stats, settings.model_name, settings.instance_name)
    state = ServerState(tts, settings, frozenset(tts.voices.names()), metrics, int(time.time()))
    app = FastAPI(title="bark-onnx", version=__version__,
                  description="Bark text-to-audio behind OpenAI's speech API. `instructions` is accepted and "
                              "ignored; `speed` must be 1.0; Bark's own options are extra fields.")
    app.state.bark = state
    install_handlers(app)
    app.add_middleware(Guard, metrics=metrics, instance=settings.instance_name, max_body_bytes=settings.max_body_bytes)
    app.include_router(_v1_routes(state))

    def unavailable(message: str) -> JSONResponse:
        return JSONResponse(error_body(message, "server_error", None, "unavailable"), status_code=503,
                            headers={"Retry-After": str(settings.retry_after)})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return PAGE

    @app.get("/health", summary="The engine is alive")
    async def health():
        if not tts.engine.alive:
            return unavailable("the engine has stopped")
        return {"status": "ok", "instance": settings.instance_name}

    @app.get("/ready", summary="The model is loaded and new requests are accepted")
    async def ready():
        if state.draining:
            return unavailable("shutting down")
        if not tts.engine.alive:
            return unavailable("the engine has stopped")
        return {"status": "ready", "model": settings.model_name, "instance": settings.instance_name}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
