"""OpenAI's error body, `{"error": {"message", "type", "param", "code"}}`, for every error the server answers."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..runtime.errors import BarkOnnxError, EngineClosedError, QueueFullError, VoiceError

logger = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # nginx's status for a request whose client went away; never reaches the client


class ApiError(Exception):
    """An answer other than success: its status, OpenAI's error fields and extra headers."""

    def __init__(self, status: int, message: str, *, type: str | None = None, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = headers or {}


# the runtime's names for what the request body calls otherwise
_BODY_FIELDS = {"text": "input"}


def api_error(err: BarkOnnxError, settings) -> ApiError:
    """The answer to an error the runtime raised for a request: bad input and unknown voices are a
    400 naming the field, a full queue a 429 and a closed engine a 503 (both with Retry-After);
    anything else the runtime refuses is a 400 with its message."""
    retry = {"Retry-After": str(settings.retry_after)}
    if isinstance(err, QueueFullError):
        return ApiError(429, f"the server is busy: {err}", type="rate_limit_error", code="queue_full", headers=retry)
    if isinstance(err, EngineClosedError):
        return ApiError(503, "the server is shutting down; retry on another instance", code="shutting_down",
                        headers=retry)
    if isinstance(err, VoiceError):
        return ApiError(400, str(err), param="voice", code="invalid_value")
    param = getattr(err, "param", None)
    return ApiError(400, str(err), param=_BODY_FIELDS.get(param, param), code="invalid_value")


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(error_body(err.message, err.type, err.param, err.code), status_code=err.status,
                        headers=err.headers)


def _validation_message(errors: list[dict]) -> tuple[str, str | None]:
    """One sentence for FastAPI's list of validation errors, and the body field it names."""
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "JSON decode error")
        return f"the request body is not valid JSON ({reason}); send a JSON object", None
    if not loc:
        return "the request needs a JSON object body, e.g. {\"model\": \"bark\", \"input\": \"Hello\"}", None
    param = loc[0]  # the body field; deeper parts name pydantic's union members, not the client's fields
    if param == "voice":
        return "voice must be a preset name (a string, see GET /v1/audio/voices) or {\"id\": name}", param
    if first.get("type") == "extra_forbidden":
        return f"unknown field {param!r}; see GET /docs for the fields this server takes", param
    if first.get("type") == "missing":
        return f"{param} is required", param
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{param}: {first.get('msg', 'invalid value')}{more}", param


_CODES = {401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


def install_handlers(app: FastAPI) -> None:
    """Answer every refusal, FastAPI's own included, with OpenAI's body; bad input is a 400, never a 422."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return error_response(err)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError):
        message, param = _validation_message(list(err.errors()))
        return error_response(ApiError(400, message, param=param, code="invalid_value"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException):
        status = err.status_code
        message = err.detail if isinstance(err.detail, str) else str(err.detail)
        if status == 404 and message == "Not Found":
            message = (f"no route {request.url.path}; this server has POST /v1/audio/speech, GET /v1/models, "
                       "GET /v1/audio/voices, /health, /ready, /metrics and the page at /")
        elif status == 405:
            message = f"{request.url.path} does not take {request.method}"
        return error_response(ApiError(status, message, code=_CODES.get(status), headers=dict(err.headers or {})))
