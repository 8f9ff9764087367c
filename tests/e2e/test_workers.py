"""Limits shared by two uvicorn workers through Redis."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from tests.support.processes import free_port, manage, proxy_env, require, scratch_database, start, stop

pytestmark = pytest.mark.e2e

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


def test_two_workers_share_one_rate_limit(tmp_path):
    require(REDIS_URL)
    from accounts import counters

    counters.delete_all(REDIS_URL)  # our counters only: never the rest of that database
    router_port, proxy_port = free_port(), free_port()
    router = start(
        ["-m", "tests.support.fake_router", "--port", str(router_port)],
        None,
        f"http://127.0.0.1:{router_port}/_stats",
    )
    try:
        with scratch_database(tmp_path) as database:
            env = proxy_env(f"http://127.0.0.1:{router_port}", database, REDIS_URL=REDIS_URL)
            manage("migrate", "--verbosity", "0", env=env)
            key = manage(
                "create_api_key", "wanda", "--rpm", "10", "--max-parallel", "50", env=env
            ).splitlines()[-1]
            proxy = start(
                [
                    "-m",
                    "uvicorn",
                    "hfproxy_site.asgi:application",
                    "--port",
                    str(proxy_port),
                    "--workers",
                    "2",
                ],
                env,
                f"http://127.0.0.1:{proxy_port}/",
            )
            try:
                statuses = []
                # All 16 in one one-minute window: start afresh if this one is about to end.
                if (left := 60 - time.time() % 60) < 10:
                    time.sleep(left + 0.2)
                for _ in range(16):
                    # A new connection each time, so that both workers take requests.
                    with httpx.Client(
                        headers={"Authorization": f"Bearer {key}", "Connection": "close"}
                    ) as client:
                        statuses.append(
                            client.post(
                                f"http://127.0.0.1:{proxy_port}/v1/chat/completions",
                                json={"messages": [{"role": "user", "content": "hi"}]},
                            ).status_code
                        )
            finally:
                stop(proxy)
    finally:
        stop(router)
    assert statuses.count(200) == 10
    assert statuses.count(429) == 6
