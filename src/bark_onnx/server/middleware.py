"""The ASGI layer around every request: body size limit, instance header, request metrics, and a 500
with OpenAI's error body for whatever a request raises unexpectedly (logged; the others go on)."""

from __future__ import annotations

import json
import logging

from fastapi import HTTPException

from .errors import error_body
from .metrics import Metrics
from .settings import INSTANCE_HEADER

logger = logging.getLogger(__name__)


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
        code = "request_too_large" if status == 413 else "internal_error"
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
