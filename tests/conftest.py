"""Shared fixtures: a respx router standing in for Hugging Face, captured reports, and a
driver that speaks raw ASGI to the real application (for disconnects and body limits)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import httpx
import pytest
import respx
from django.conf import settings
from django.contrib.auth import get_user_model

from accounts import runtime, services
from gateway import exchange, upstream
from tests.clients import AsyncClient


@pytest.fixture(autouse=True)
def _reset():
    """Cached lookups, limit counters, an injected transport: nothing leaks from one test into
    the next (`runtime.reset()` walks every module's state)."""
    runtime.reset()
    yield
    runtime.reset()


@pytest.fixture
async def usage_db(transactional_db):
    """A database the usage writer can write to; queued records are written (or the test
    fails) before the database is emptied."""
    yield
    await asyncio.sleep(0.02)  # let cleanups scheduled by closed responses start
    # What the server's shutdown does: background work ends, the records are written.
    assert await runtime.stop(10), "usage records were left unwritten"


@pytest.fixture
def user(usage_db):
    return get_user_model().objects.create_user("alice", password="alice-password-123")


@pytest.fixture
def api_key(user) -> str:
    """A valid key of `user` (alice), calling upstream with HF_TOKEN."""
    return services.api_key_create(user=user, name="test key")[1]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def async_client(api_key) -> AsyncClient:
    """Django's async test client, authenticated with `api_key`."""
    # ASGI header names as defaults: AsyncClient(headers=…) turns them into WSGI names.
    return AsyncClient(authorization=f"Bearer {api_key}")


@pytest.fixture
def anonymous_client() -> AsyncClient:
    return AsyncClient()


@pytest.fixture
async def hf():
    """The Hugging Face router, mocked: respx's router injected as the upstream transport."""
    router = respx.MockRouter(base_url=settings.HF_BASE_URL, assert_all_called=False)
    upstream.set_transport(httpx.MockTransport(router.async_handler))
    yield router
    await upstream.aclose()  # the transport goes back with the next `runtime.reset()`


@pytest.fixture
def reports(monkeypatch):
    """Every report made while the test runs, in order."""
    made: list[exchange.Exchange] = []
    original = exchange.report

    def capture(exchange):
        made.append(exchange)
        original(exchange)

    monkeypatch.setattr(exchange, "report", capture)
    return made


# --- Router answers ----------------------------------------------------------------------------


def completion(content="Hello!", model="openai/gpt-oss-120b", usage=(5, 3)):
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
    }


def chunk(content=None, model="openai/gpt-oss-120b", finish=None, usage=None):
    data = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": [] if usage else [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
    }
    if usage:
        data["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def standard_stream(words=("Hel", "lo"), usage=(5, 2)) -> list[bytes]:
    return [*(chunk(w) for w in words), chunk(finish="stop"), chunk(usage=usage), b"data: [DONE]\n\n"]


class ChunkStream(httpx.AsyncByteStream):
    """A router body that arrives chunk by chunk, optionally slowly or never finishing."""

    def __init__(self, chunks, delay: float = 0.0, hang_after: bool = False) -> None:
        self.chunks = list(chunks)
        self.delay = delay
        self.hang_after = hang_after
        self.sent = 0
        self.closed = False

    async def __aiter__(self):
        for data in self.chunks:
            if self.delay:
                await asyncio.sleep(self.delay)
            self.sent += 1
            yield data
        if self.hang_after:
            await asyncio.sleep(3600)

    async def aclose(self) -> None:
        self.closed = True


def sse_response(chunks, **kwargs) -> tuple[httpx.Response, ChunkStream]:
    stream = ChunkStream(chunks, **kwargs)
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream), stream


def events_of(body: bytes) -> list[bytes]:
    return [event for event in body.split(b"\n\n") if event]


# --- Raw ASGI ------------------------------------------------------------------------------------


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

    scope = {
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
    if disconnect_after_seconds is not None:
        asyncio.get_running_loop().call_later(disconnect_after_seconds, gone.set)
    await asyncio.wait_for(application(scope, receive, send), timeout=10)
    return result
