"""The ASGI layer around every request: header and body size limits, instance header, request metrics,
and a 500 with OpenAI's error body for whatever a request raises unexpectedly (logged; the others go on)."""

from __future__ import annotations

import json
import logging

from fastapi import HTTPException

from .errors import error_body
from .metrics import Metrics
from .settings import INSTANCE_HEADER

logger = logging.getLogger(__name__)

# Request headers: at most this many, and this many bytes of names and values in all; more get a 431.
# OpenAI's client sends about 15 headers (under 1 KiB, a key included); common proxies take 8 to 32 KiB.
MAX_HEADERS = 100
MAX_HEADER_BYTES = 32 * 1024
ERROR_CODES = {413: "request_too_large", 431: "request_headers_too_large"}


def header_problem(headers) -> str | None:
    """Why a request's headers are refused (too many, too large in all), or None."""
    if len(headers) > MAX_HEADERS:
        return f"the request has {len(headers)} headers; at most {MAX_HEADERS} are accepted"
    size = sum(len(name) + len(value) for name, value in headers)
    if size > MAX_HEADER_BYTES:
        return (f"the request's headers take {size} bytes; at most {MAX_HEADER_BYTES} bytes of header names "
                "and values are accepted")
    return None


class StreamCut(Exception):
    """A streamed response that must stop short: the connection closes without the final chunk,
    so the client sees an incomplete response instead of a short one that looks whole."""


class Guard:
    def __init__(self, app, metrics: Metrics, instance: str, max_body_bytes: int):
        self.app, self.metrics, self.max_body = app, metrics, max_body_bytes
        self.instance_header = (INSTANCE_HEADER.lower().encode(), instance.encode("latin-1", "replace"))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = {"status": None, "started": False}
        problem = header_problem(scope.get("headers") or [])
        if problem is not None:
            await self._error(send, state, 431, problem)
            self._count(scope, state)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self._error(send, state, 413, f"the request body is larger than {self.max_body} bytes")
            self._count(scope, state)
            return

        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:  # a chunked body without a length
                    raise HTTPException(413, f"the request body is larger than {self.max_body} bytes")
            return message

        async def tracked_send(message):
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
                message = {**message, "headers": [*message.get("headers", []), self.instance_header]}
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except StreamCut as err:
            logger.warning("%s %s: stream cut short (%s)", scope.get("method"), scope.get("path"), err)
        except Exception:
            logger.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if not state["started"]:
                await self._error(send, state, 500, "the server failed on this request; it was logged")
        self._count(scope, state)

    async def _error(self, send, state, status: int, message: str) -> None:
        kind = "server_error" if status >= 500 else "invalid_request_error"
        code = ERROR_CODES.get(status, "internal_error")
        body = json.dumps(error_body(message, kind, None, code)).encode()
        state["status"], state["started"] = status, True
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                self.instance_header]})
        await send({"type": "http.response.body", "body": body})

    def _count(self, scope, state) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "other"  # the route's template: unknown paths never add series
        self.metrics.requests.inc(1, path, str(state["status"] or 0))
