"""Client faults: a client that leaves, early or mid-stream, or reads slowly."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.faults.harness import chat, request_id


def open_request(proxy, body: dict, rid: str, *, rcvbuf: int | None = None) -> socket.socket:
    """A raw connection that has sent a chat request; the caller decides when to leave."""
    host, port = proxy.url.removeprefix("http://").split(":")
    connection = socket.socket()
    if rcvbuf:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    connection.connect((host, int(port)))
    raw = json.dumps(body).encode()
    connection.sendall(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {proxy.keys['canary']}\r\nX-Request-Id: {rid}\r\n"
        f"Content-Length: {len(raw)}\r\n\r\n".encode()
        + raw
    )
    return connection


def _router_noticed(stats, model: str, seconds: float = 5) -> float:
    """When the router saw its client (the proxy) go away (epoch seconds)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [entry for entry in stats()["abandoned"] if entry["model"] == model]
        if left:
            return left[0]["at"]
        time.sleep(0.05)
    raise AssertionError(f"the router's {model} request was never closed: {stats()}")


@pytest.mark.parametrize("model", ["slow/long-answer", "fault/hang-after-headers", "fault/drip"])
def test_leaving_mid_stream_closes_the_router_stream_within_2_s(proxy, stats, model):
    rid = request_id()
    headers = {**proxy.auth(), "X-Request-Id": rid}
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "POST", proxy.api + "/chat/completions", json=chat(model, True), headers=headers
        ) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")  # the stream has started
    left = time.time()
    assert _router_noticed(stats, model) - left < 2
    record = proxy.record(rid)
    assert (record["outcome"], record["stream"]) == ("client_disconnected", True)


def test_leaving_before_the_first_byte_cancels_the_router_call(proxy, stats):
    rid = request_id()
    with open_request(proxy, chat("fault/hang"), rid):
        time.sleep(0.3)
    left = time.time()
    assert _router_noticed(stats, "fault/hang") - left < 2
    record = proxy.record(rid)
    assert (record["status"], record["outcome"]) == (499, "client_disconnected")
    assert stats()["attempts"]["fault/hang"] == 1


def test_a_slow_reader_does_not_grow_memory(proxy, stats):
    """The router could send 64 MB at once; a client reading 4 KB every 20 ms must hold the
    proxy (and the router) back, not make it buffer the difference."""
    rid = request_id()
    before = proxy.rss_mib()
    received = 0
    with open_request(proxy, chat("fault/big", True), rid, rcvbuf=16384) as connection:
        until = time.monotonic() + 2.5  # within REQUEST_TIMEOUT (3 s)
        while time.monotonic() < until:
            received += len(connection.recv(4096))
            time.sleep(0.02)
        grown = proxy.rss_mib() - before
        assert proxy.records(rid) == []  # still streaming: the router has not finished
    print(
        f"\nslow reader: {received / 1e6:.2f} MB read in 2.5 s; proxy RSS {before:.1f} MiB, +{grown:.1f} MiB"
    )
    assert received < 4_000_000
    assert grown < 16  # the whole answer is 64 MB
    assert proxy.record(rid)["outcome"] == "client_disconnected"
    assert _router_noticed(stats, "fault/big")
