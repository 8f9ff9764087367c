"""Two workers' usage batches never deadlock on PostgreSQL (issue 16, point 5): each batch
updates its keys' `last_used_at` in ascending key order (accounts/usage.py `_write`). Under
mixed traffic on many keys, PostgreSQL counts no deadlock and the proxy logs none."""

from __future__ import annotations

import json
import os
import random
import threading
import time

import httpx
import pytest

from tests.support.harness import chat, router_and_proxy
from tests.support.processes import manage

KEYS = 40
SECONDS = float(os.environ.get("DEADLOCK_SECONDS", "15"))
BODIES = [chat("openai/gpt-oss-120b"), chat("openai/gpt-oss-120b", stream=True)]

_MAKE_KEYS = """
from accounts import services
user = services.user_get_or_create(username="many")
for i in range({count}):
    print(services.api_key_create(user=user, name=f"key {{i}}")[1])
"""


def _deadlocks(proxy) -> int:
    return proxy.db.query("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")[0][
        "deadlocks"
    ]


def _traffic(proxy, keys: list[str], until: float, sent: list[str], failed: list[int]) -> None:
    with httpx.Client(timeout=15) as client:
        while time.monotonic() < until:
            body = random.choice(BODIES)
            headers = {"Authorization": f"Bearer {random.choice(keys)}", "Content-Type": "application/json"}
            response = client.post(proxy.api + "/chat/completions", content=json.dumps(body), headers=headers)
            if response.status_code == 200:
                sent.append(response.headers["x-request-id"])
            else:
                failed.append(f"{response.status_code} {response.text[:200]}")


def test_two_workers_batches_on_many_keys_never_deadlock(tmp_path):
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        pytest.skip("runs in the PostgreSQL pass (DATABASE_URL=postgres://…): SQLite has no row locks")
    # Batches every 20 ms from each worker: their transactions overlap all the time.
    with router_and_proxy(tmp_path, WEB_CONCURRENCY="2", USAGE_FLUSH_INTERVAL="0.02") as (_, proxy):
        made = manage("shell", "-c", _MAKE_KEYS.format(count=KEYS), env=proxy.env).split()
        keys = [word for word in made if word.startswith("hfp_")]  # not the shell's own chatter
        assert len(keys) == KEYS
        before = _deadlocks(proxy)
        sent: list[str] = []
        failed: list[str] = []
        until = time.monotonic() + SECONDS
        threads = [
            threading.Thread(target=_traffic, args=(proxy, keys, until, sent, failed)) for _ in range(16)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        deadline = time.monotonic() + 30
        while proxy.count_records() < len(sent) and time.monotonic() < deadline:
            time.sleep(0.2)
        deadlocks = _deadlocks(proxy) - before
        logged = proxy.log_text().count("deadlock detected")
        print(
            f"\n{len(sent)} requests on {KEYS} keys in {SECONDS:.0f} s: {deadlocks} deadlocks, {logged} logged"
        )
        assert (deadlocks, logged) == (0, 0)
        assert not failed
        assert proxy.count_records() == len(sent)
