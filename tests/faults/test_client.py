"""Client faults: a client that leaves, early or mid-stream, or reads slowly."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.harness import chat, open_request, request_id


def _router_noticed(stats, model: str, seconds: float = 5) -> float:
    """When the router saw its client (the proxy) go away (epoch seconds)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [entry for entry in stats()["abandoned"] if entry["model"] == model]
        if left:
            return left[0]["at"]
        time.sleep(0.05)
    raise AssertionError(f"the router's {model} request was never closed: {stats()}")


# While chunks flow, and while the router sends one only every 0.2 s. (A router silent after the
# headers would be closed by READ_TIMEOUT within 2 s anyway: no test of the disconnect.)
@pytest.mark.parametrize("model", ["slow/long-answer", "fault/drip"])
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


def test_a_slow_reader_holds_the_router_back_and_memory_stays_flat(proxy, stats):
    """The router could send 64 MB at once; a client reading 4 KB every 20 ms must hold the
    proxy, and through it the router, back: neither buffers the difference."""
    rid = request_id()
    before = proxy.rss_mib()
    received = 0
    with open_request(proxy, chat("fault/big", True), rid, rcvbuf=16384) as connection:
        until = time.monotonic() + 1.5  # well within REQUEST_TIMEOUT (3 s)
        while time.monotonic() < until:
            received += len(connection.recv(4096))
            time.sleep(0.02)
        grown = proxy.rss_mib() - before
        sent = stats()["big_bytes_sent"]
    print(
        f"\nslow reader: {received / 1e6:.2f} MB read in 1.5 s, the router sent {sent / 1e6:.1f} MB; "
        f"proxy RSS {before:.1f} MiB, +{grown:.1f} MiB"
    )
    # What the router got rid of is what the client read plus the socket buffers on the way
    # (the kernel's, a few MB each), not the 64 MB it had.
    assert sent < 16_000_000
    assert grown < 16
    assert proxy.record(rid)["outcome"] == "client_disconnected"
    assert _router_noticed(stats, "fault/big")
