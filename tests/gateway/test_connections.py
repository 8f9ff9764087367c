"""gateway.connections: uvicorn's httptools protocol with header deadlines, a header size limit
and a connection cap, driven in-process through uvicorn 0.55's own parser and request cycle (a
change in the uvicorn internals it hooks into fails here; tests/faults/test_slowloris.py attacks a
real `serve`)."""

from __future__ import annotations

import asyncio
import json

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.connections import LimitedHttpToolsProtocol

GET = b"GET /health HTTP/1.1\r\nHost: example\r\n\r\n"


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def ok(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def limits(settings):
    settings.HEADER_TIMEOUT = 0.2
    settings.MAX_HEADER_BYTES = 1000
    settings.MAX_CONNECTIONS = 3
    return settings


@pytest.fixture
def connect(limits):
    config, state = Config(app=ok, lifespan="off", proxy_headers=False), ServerState()

    def connect() -> LimitedHttpToolsProtocol:
        protocol = LimitedHttpToolsProtocol(config, state, {})
        protocol.connection_made(Transport())
        return protocol

    return connect


def test_it_hooks_into_what_uvicorn_has():
    overridden = {"connection_made", "connection_lost", "data_received", "on_message_begin"}
    overridden |= {"on_headers_complete", "on_response_complete"}
    assert overridden <= set(vars(HttpToolsProtocol))
    assert overridden | {"drop"} <= set(vars(LimitedHttpToolsProtocol))


async def test_it_refuses_headers_over_the_limit_with_431(connect):
    protocol = connect()
    protocol.data_received(b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 600)
    assert not protocol.transport.closed
    protocol.data_received(b"a" * 600)
    head, body = protocol.transport.written.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 431 ") and protocol.transport.closed
    assert json.loads(body)["error"]["code"] == "request_headers_too_large"


async def test_a_body_arriving_with_the_headers_does_not_count(connect):
    protocol = connect()
    protocol.data_received(b"POST /v1/x HTTP/1.1\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000)
    assert not protocol.transport.closed and protocol.header_deadline is None


async def test_a_connection_without_whole_headers_is_closed_after_the_timeout(connect):
    silent, dribbling = connect(), connect()
    dribbling.data_received(b"GET /health HTTP/1.1\r\n")
    for _ in range(3):
        await asyncio.sleep(0.1)
        dribbling.data_received(b"X-Slow: 1\r\n")
    assert silent.transport.closed and dribbling.transport.closed


async def test_the_clock_stops_with_the_headers_and_starts_again_after_the_response(connect):
    protocol = connect()
    protocol.data_received(GET)
    assert protocol.header_deadline is None  # serving: never timed out, never evicted
    await asyncio.wait_for(protocol.cycle.message_event.wait(), 1)  # set when the response is done
    assert protocol.cycle.response_complete and protocol.transport.written.startswith(b"HTTP/1.1 200 ")
    assert protocol.header_deadline is not None  # idle: it owes the next request's headers
    protocol.data_received(GET)
    assert protocol.header_deadline is None


async def test_past_the_cap_the_connection_owing_headers_longest_goes(connect):
    serving = connect()
    serving.data_received(b"POST /v1/x HTTP/1.1\r\nContent-Length: 10\r\n\r\n")  # its body to come
    oldest, newer = connect(), connect()
    newest = connect()  # the fourth of MAX_CONNECTIONS=3
    assert oldest.transport.closed
    assert not any(c.transport.closed for c in (serving, newer, newest))


async def test_with_every_connection_serving_the_newcomer_goes(connect):
    for _ in range(3):
        connect().data_received(b"POST /v1/x HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789")
    assert connect().transport.closed


async def test_at_the_cap_the_body_arriving_longest_goes_before_whole_requests(connect):
    whole = connect()
    whole.data_received(b"POST /v1/x HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789")
    slow, slower = connect(), connect()
    slower.data_received(b"POST /v1/x HTTP/1.1\r\nContent-Length: 10\r\n\r\n01")
    slow.data_received(b"POST /v1/x HTTP/1.1\r\nContent-Length: 10\r\n\r\n01")
    newcomer = connect()
    assert [c.transport.closed for c in (whole, slower, slow, newcomer)] == [False, True, False, False]
