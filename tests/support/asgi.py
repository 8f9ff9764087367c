"""A driver that speaks raw ASGI to the real application, for what the test client cannot
show: a client that leaves mid-answer, a body sent in parts, the bytes as they were sent."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field


@dataclass
class AsgiResult:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def json(self):
        return json.loads(self.body)


def http_scope(method: str, path: str, headers: dict[str, str] | None = None) -> dict:
    """An ASGI scope of an HTTP request, as uvicorn hands it over."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def asgi_request(
    method: str,
    path: str,
    body: bytes | list[bytes] = b"",
    headers: dict[str, str] | None = None,
    disconnect_after_chunks: int | None = None,
    disconnect_after_seconds: float | None = None,
    disconnect_on_start: bool = False,
) -> AsgiResult:
    """Drive the real ASGI application. The client goes away once it has received
    `disconnect_after_chunks` body chunks, after `disconnect_after_seconds`, or while the
    response's headers are being sent (`disconnect_on_start`)."""
    from hfproxy_site.asgi import application

    parts = body if isinstance(body, list) else [body]
    messages = [
        {"type": "http.request", "body": part, "more_body": index < len(parts) - 1}
        for index, part in enumerate(parts)
    ]
    result = AsgiResult()
    gone = asyncio.Event()

    async def receive():
        if messages:
            return messages.pop(0)
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            result.status = message["status"]
            result.headers = {k.decode().lower(): v.decode() for k, v in message["headers"]}
            if disconnect_on_start:
                gone.set()
                await asyncio.sleep(0.05)
        elif message["type"] == "http.response.body" and message.get("body"):
            result.chunks.append(message["body"])
            if disconnect_after_chunks is not None and len(result.chunks) >= disconnect_after_chunks:
                gone.set()

    scope = http_scope(method, path, headers)
    if disconnect_after_seconds is not None:
        asyncio.get_running_loop().call_later(disconnect_after_seconds, gone.set)
    await asyncio.wait_for(application(scope, receive, send), timeout=10)
    return result
