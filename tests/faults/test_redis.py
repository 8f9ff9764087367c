"""Redis, the limit counters' store: a burst on one limited key, Redis cut off (a TCP proxy
between hfproxy and Redis that swallows every packet), slots taken before the cut, and
LIMITS_FAIL_OPEN."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import httpx
import pytest

from tests.support.harness import Proxy, chat, scratch_proxy, send
from tests.support.processes import manage, require
from tests.support.tcpproxy import TcpProxy

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
MODEL = "openai/gpt-oss-120b:fireworks-ai"


@contextlib.contextmanager
def _proxy_on_redis(router, folder, **settings: str):
    """A proxy whose Redis is behind a TcpProxy of its own: (proxy, link)."""
    require(REDIS_URL)
    parts = urlsplit(REDIS_URL)
    link = TcpProxy(parts.hostname, parts.port or 6379)
    link.start()
    prefix = f"hfproxy-test:{uuid.uuid4().hex}:"  # this run's counters alone
    url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{link.port}"))
    try:
        with scratch_proxy(router, folder, REDIS_URL=url, REDIS_KEY_PREFIX=prefix, **settings) as proxy:
            yield proxy, link
    finally:
        link.stop()
        from accounts import counters

        counters.delete_all(REDIS_URL, prefix)


@pytest.fixture(scope="module")
def closed(router, tmp_path_factory):
    """Fail closed, the default."""
    with _proxy_on_redis(router, tmp_path_factory.mktemp("redis-closed")) as found:
        yield found


@pytest.fixture(scope="module")
def fail_open(router, tmp_path_factory):
    with _proxy_on_redis(router, tmp_path_factory.mktemp("redis-open"), LIMITS_FAIL_OPEN="true") as found:
        yield found


@contextlib.contextmanager
def _cut(link: TcpProxy):
    link.set("blackhole")
    try:
        yield
    finally:
        link.set("pass")


def _key(proxy: Proxy, *limits: str) -> str:
    return manage("create_api_key", "limited", *limits, env=proxy.env).splitlines()[-1]


async def _concurrently(url: str, key: str, bodies: list[dict], tag: str) -> list[int]:
    connector = aiohttp.TCPConnector(limit=len(bodies))
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int, body: dict) -> int:
            headers = {"Authorization": f"Bearer {key}", "X-Request-Id": f"{tag}-{i}"}
            async with session.post(url, json=body, headers=headers) as response:
                await response.read()
                return response.status

        return await asyncio.gather(*(one(i, body) for i, body in enumerate(bodies)))


def _records(proxy: Proxy, tag: str, count: int) -> list[dict]:
    deadline = time.monotonic() + 20
    query = "SELECT status, outcome, error_code FROM accounts_usagerecord WHERE request_id LIKE %s"
    while len(rows := proxy.db.query(query, f"{tag}-%")) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    return rows


def _three_in_flight_pass(proxy: Proxy, key: str) -> list[int]:
    """Four streams at once on a max-parallel-3 key (each lasts until REQUEST_TIMEOUT)."""
    bodies = [chat("fault/drip", stream=True)] * 4
    return sorted(asyncio.run(_concurrently(proxy.api + "/chat/completions", key, bodies, uuid.uuid4().hex)))


def test_a_burst_on_one_key_gets_no_500_and_leaves_no_slot_taken(closed):
    proxy, _ = closed
    key = _key(proxy, "--max-parallel", "3")
    tag = f"burst-{uuid.uuid4().hex}"
    statuses = asyncio.run(_concurrently(proxy.api + "/chat/completions", key, [chat(MODEL)] * 600, tag))
    assert set(statuses) <= {200, 429}, {status: statuses.count(status) for status in set(statuses)}
    assert statuses.count(200) >= 3
    assert len(_records(proxy, tag, 600)) == 600
    # Nothing in flight any more: the key takes exactly its three at once.
    assert _three_in_flight_pass(proxy, key) == [200, 200, 200, 429]


def test_redis_cut_off_means_a_prompt_503_in_the_apis_format(closed):
    proxy, link = closed
    key = _key(proxy, "--rpm", "1000")
    with _cut(link):
        answers = [send(proxy, chat(MODEL), key=None, headers=_bearer(key)) for _ in range(10)]
        anthropic = send(
            proxy,
            {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
            key=None,
            path="/messages",
            headers=_bearer(key),
        )
        unlimited = send(proxy, chat(MODEL))  # the canary key has no limits: Redis is not asked
        health = httpx.get(proxy.url + "/health", timeout=10)
    assert [answer.status for answer in answers] == [503] * 10
    assert all(int(answer.headers["Retry-After"]) >= 1 for answer in answers)
    assert {answer.json()["error"]["code"] for answer in answers} == {"limits_unavailable"}
    # Waiting out a silent Redis once, not on every request.
    assert sum(answer.seconds < 1 for answer in answers) >= 5, [answer.seconds for answer in answers]
    assert anthropic.status == 503 and anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "overloaded_error"
    assert unlimited.status == 200
    assert health.status_code == 200
    assert health.json()["status"] == "degraded" and health.json()["redis"] == "unavailable"
    assert health.json()["database"] == "ok"
    # One record each, as for any refusal.
    for answer in [*answers, anthropic]:
        record = proxy.record(answer.request_id)
        assert (record["status"], record["error_code"]) == (503, "limits_unavailable")
    # Back once Redis is.
    assert _eventually_ok(proxy, key)
    assert httpx.get(proxy.url + "/health").json()["redis"] == "ok"


def test_slots_of_requests_that_ended_while_redis_was_cut_come_back(closed):
    proxy, link = closed
    key = _key(proxy, "--max-parallel", "3")

    async def streams_ending_during_a_cut() -> list[int]:
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession() as session:
            responses = [
                await session.post(
                    proxy.api + "/chat/completions", json=chat("fault/drip", stream=True), headers=headers
                )
                for _ in range(3)
            ]
            with _cut(link):  # the streams end (REQUEST_TIMEOUT) and try to give their slots back
                for response in responses:
                    await response.read()
                await asyncio.sleep(1)
            return [response.status for response in responses]

    assert asyncio.run(streams_ending_during_a_cut()) == [200] * 3
    # Given back once Redis is: within seconds, not at their deadline (REQUEST_TIMEOUT + 120 s).
    deadline = time.monotonic() + 30
    while (statuses := _three_in_flight_pass(proxy, key)) != [200, 200, 200, 429]:
        assert time.monotonic() < deadline, statuses


def test_fail_open_counts_in_each_worker(fail_open):
    proxy, link = fail_open
    key = _key(proxy, "--rpm", "2")
    with _cut(link):
        statuses = [send(proxy, chat(MODEL), key=None, headers=_bearer(key)).status for _ in range(3)]
        health = httpx.get(proxy.url + "/health", timeout=10).json()
    assert statuses == [200, 200, 429]  # this worker's own count
    assert (health["status"], health["redis"]) == ("degraded", "unavailable")


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _eventually_ok(proxy: Proxy, key: str, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if send(proxy, chat(MODEL), key=None, headers=_bearer(key)).status == 200:
            return True
        time.sleep(0.5)
    return False
