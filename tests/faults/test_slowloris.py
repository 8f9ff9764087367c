"""Slowloris and oversized headers, against `manage.py serve` (what the README runs): thousands of
connections that never finish their headers do not take `/health` down and are closed within
HEADER_TIMEOUT, a header sent a line at a time does not keep a request open, and headers larger
than MAX_HEADER_BYTES are refused (431) without the worker reading them into memory."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import time

import httpx
import pytest

from tests.support.harness import _children, scratch_proxy
from tests.support.slowclients import HALF_HEADER, connect_raw, still_open

HEADER_TIMEOUT = 2.0
MAX_CONNECTIONS = 300
# The worker's open-file limit, as many hosts give a process (ulimit -n 1024): the attack below
# opens twice as many connections.
WORKER_FILES = 1000
ATTACKERS = 2000


@pytest.fixture(scope="module")
def target(router, tmp_path_factory):
    limits = {"HEADER_TIMEOUT": str(HEADER_TIMEOUT), "MAX_CONNECTIONS": str(MAX_CONNECTIONS)}
    with scratch_proxy(router, tmp_path_factory.mktemp("slowloris"), **limits) as proxy:
        for pid in _workers(proxy):
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (WORKER_FILES, WORKER_FILES))
        yield proxy


@pytest.fixture(scope="module", autouse=True)
def enough_files():
    """This process opens ATTACKERS sockets at once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, ATTACKERS * 2 + 1000) if hard != resource.RLIM_INFINITY else ATTACKERS * 2 + 1000
    if wanted < ATTACKERS + 200:
        pytest.skip(f"this process may open only {hard} files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _workers(proxy) -> list[int]:
    return [proxy.process.pid, *_children(proxy.process.pid)]


def _open_files(proxy) -> int:
    return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in _workers(proxy))


def _health(proxy) -> int | str:
    try:
        return httpx.get(proxy.url + "/health", timeout=5).status_code
    except httpx.HTTPError as error:
        return type(error).__name__


def test_half_sent_headers_neither_take_health_down_nor_stay(target):
    before = _open_files(target)
    attackers = [c for c in (connect_raw(target, HALF_HEADER) for _ in range(ATTACKERS)) if c]
    try:
        time.sleep(0.5)
        during = _open_files(target)
        health = [_health(target) for _ in range(5)]
    finally:
        left = still_open(attackers, HEADER_TIMEOUT + 10)
    print(f"\n{len(attackers)} half-sent requests: worker files {before} → {during}; /health {health}")
    assert health == [200] * 5
    assert during <= before + MAX_CONNECTIONS + 10
    assert left == 0, f"{left} of {len(attackers)} connections still open after {HEADER_TIMEOUT + 10} s"
    assert _health(target) == 200


def test_a_header_line_every_half_second_does_not_keep_a_request_open(target):
    dribblers = [c for c in (connect_raw(target, b"GET /health HTTP/1.1\r\n") for _ in range(20)) if c]
    assert len(dribblers) == 20
    assert still_open(dribblers, HEADER_TIMEOUT + 10, dribble=b"X-Slow: 1\r\n") == 0
    assert _health(target) == 200


def _send_big_header(proxy, megabytes: int, finish: bool) -> socket.socket:
    connection = connect_raw(proxy, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
    assert connection is not None
    with contextlib.suppress(OSError):  # the server may close before it has all of it
        connection.sendall(b"a" * (megabytes * 1024 * 1024) + (b"\r\n\r\n" if finish else b""))
    return connection


def test_an_8_mb_header_is_refused(target):
    connection = _send_big_header(target, 8, finish=True)
    try:
        answer = connection.recv(65536)
    except OSError:
        answer = b""  # reset: closed before reading the rest, which is refusal enough
    finally:
        connection.close()
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert _health(target) == 200


def test_unfinished_huge_headers_do_not_grow_the_worker(target):
    before = target.rss_mib()
    connections = [_send_big_header(target, 8, finish=False) for _ in range(10)]
    try:
        time.sleep(0.5)
        grown = target.rss_mib() - before
    finally:
        for connection in connections:
            connection.close()
    print(f"\nten unfinished 8 MB headers: worker RSS {before:.1f} MiB + {grown:.1f} MiB")
    assert grown < 40
    assert _health(target) == 200


SLOW_BODY = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100000\r\n\r\n{"
)


def test_bodies_that_never_finish_do_not_take_health_down(target):
    # No key needed: Django reads the whole body before anything is authenticated, and each
    # byte within CLIENT_BODY_TIMEOUT (60 s) of the last keeps the request alive.
    senders = [c for c in (connect_raw(target, SLOW_BODY) for _ in range(MAX_CONNECTIONS + 100)) if c]
    try:
        time.sleep(0.5)
        health = [_health(target) for _ in range(5)]
    finally:
        for connection in senders:
            connection.close()
    print(f"\n{len(senders)} unfinished bodies: /health {health}")
    assert health == [200] * 5
