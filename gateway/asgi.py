"""The ASGI layer around Django: what Django's handler cannot do for us.

- Lifespan: Django has none; on shutdown queued usage records are written and the upstream
  client closes its connections.
- The request body limit, on the bytes actually received: Django reads a whole body (to disk if
  need be) before any view runs, and trusts `Content-Length` when it checks size.
"""

from __future__ import annotations

import json

from django.conf import settings

from accounts import usage
from gateway import errors, upstream
from gateway.middleware import request_id_from


class GatewayASGI:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope, receive, send) -> None:
        limit = settings.MAX_REQUEST_BYTES
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse_too_large(scope, send, limit)
            return

        received = 0
        too_large = False

        async def limited_receive():
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Django stops reading at a disconnect and sends nothing; we answer.
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, limited_receive, send)
        if too_large:
            await _refuse_too_large(scope, send, limit)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # uvicorn has let in-flight requests finish; their records are queued.
                await usage.writer.stop(deadline=settings.USAGE_SHUTDOWN_TIMEOUT)
                await upstream.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1").strip()
    return None


async def _refuse_too_large(scope, send, limit: int) -> None:
    body = json.dumps(errors.request_too_large(limit).body()).encode()
    request_id = request_id_from(_header(scope, b"x-request-id"))
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
