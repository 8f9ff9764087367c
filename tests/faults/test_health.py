"""/health when the database falls silent (its packets dropped: nothing refused, nothing
closed): a prompt 503, and 200 again once it answers."""

from __future__ import annotations

import contextlib
import os
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.harness import SilentRelay, launch_proxy
from tests.support.processes import scratch_database


def _health(proxy) -> tuple[int, float]:
    started = time.monotonic()
    try:
        status = httpx.get(proxy.url + "/health", timeout=20).status_code
    except httpx.TimeoutException:
        status = 0
    return status, time.monotonic() - started


def test_with_the_database_silent_health_is_a_prompt_503(router, tmp_path):
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        pytest.skip("runs in the PostgreSQL pass (DATABASE_URL=postgres://…)")
    with contextlib.ExitStack() as stack:
        database = stack.enter_context(scratch_database(tmp_path))
        server = urlsplit(database)
        relay = SilentRelay((server.hostname, server.port or 5432))
        stack.callback(relay.close)
        proxy = launch_proxy(router, relay.url(database), tmp_path)
        stack.callback(proxy.stop)
        stack.callback(relay.resume)  # before the proxy stops: its last records are written
        assert _health(proxy)[0] == 200

        relay.silence()
        answers = [_health(proxy) for _ in range(4)]
        print(f"\n/health with the database silent: {answers}")
        # Its probe waits a second at most (a busy machine gets more than twice that).
        assert all(status == 503 and seconds < 2.5 for status, seconds in answers), answers

        relay.resume()
        deadline = time.monotonic() + 15
        while _health(proxy)[0] != 200:
            assert time.monotonic() < deadline, "still 503 15 s after the database answered again"
            time.sleep(0.2)
