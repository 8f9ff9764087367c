"""Budgets are caps (issue 16, point 13): 100 concurrent streams against a 1,000-token budget on
two workers sharing Redis. The red team's run used 6,600 tokens of it (every request in flight
when the budget was reached went on); now each holds its prompt's estimate plus its max_tokens
while it runs, and the budget is never exceeded. The same for a USD budget."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from decimal import Decimal

import aiohttp
import pytest

from tests.support.harness import Proxy, scratch_proxy
from tests.support.processes import manage, require

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
MODEL = "openai/gpt-oss-120b"
MAX_TOKENS = 20  # the fake router's streams are 20 tokens long: it stops there anyway


@pytest.fixture(scope="module")
def proxy(router, tmp_path_factory):
    require(REDIS_URL)
    prefix = f"hfproxy-test:{uuid.uuid4().hex}:"
    folder = tmp_path_factory.mktemp("budgets")
    try:
        # Two workers: the budget is shared through Redis, as across replicas.
        with scratch_proxy(
            router, folder, REDIS_URL=REDIS_URL, REDIS_KEY_PREFIX=prefix, WEB_CONCURRENCY="2"
        ) as proxy:
            yield proxy
    finally:
        from accounts import counters

        counters.delete_all(REDIS_URL, prefix)


def _key(proxy: Proxy, *limits: str) -> str:
    return manage("create_api_key", "budgeted", *limits, env=proxy.env).splitlines()[-1]


async def _burst(proxy: Proxy, key: str, count: int, tag: str, prompt: str = "hi", **fields) -> list[int]:
    """`count` streams at once, each read to its end: their statuses."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "stream": True, **fields}
    connector = aiohttp.TCPConnector(limit=count)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:

        async def one(i: int) -> int:
            headers = {"Authorization": f"Bearer {key}", "X-Request-Id": f"{tag}-{i}"}
            async with session.post(proxy.api + "/chat/completions", json=body, headers=headers) as response:
                await response.read()
                return response.status

        return await asyncio.gather(*(one(i) for i in range(count)))


def _used(proxy: Proxy, tag: str, count: int) -> list[dict]:
    """The burst's records, once all `count` are written."""
    query = (
        "SELECT status, outcome, total_tokens, cost_usd FROM accounts_usagerecord WHERE request_id LIKE %s"
    )
    deadline = time.monotonic() + 30
    while len(rows := proxy.db.query(query, f"{tag}-%")) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(rows) == count  # one record each, refusals included
    return rows


def _until_refused(proxy: Proxy, key: str, tag: str, **fields) -> int:
    """Bursts of 100 until every request is refused; the number of bursts."""
    for burst in range(50):
        statuses = asyncio.run(_burst(proxy, key, 100, f"{tag}-{burst}", **fields))
        assert set(statuses) <= {200, 429}, {status: statuses.count(status) for status in set(statuses)}
        if 200 not in statuses:
            return burst + 1
    raise AssertionError("the budget was never used up")


def test_concurrent_streams_never_exceed_a_token_budget(proxy):
    key = _key(proxy, "--token-budget", "1000")
    tag = f"tokens-{uuid.uuid4().hex}"
    bursts = _until_refused(proxy, key, tag, max_tokens=MAX_TOKENS)
    rows = [row for burst in range(bursts) for row in _used(proxy, f"{tag}-{burst}", 100)]
    ok = [row for row in rows if row["outcome"] == "ok"]
    used = sum(row["total_tokens"] for row in ok)
    print(f"\n{len(ok)} of {len(rows)} streams passed, {used} tokens used of a 1,000-token budget")
    assert ok and used <= 1000
    # What is left is less than one request's use: the budget was used, not merely guarded.
    assert 1000 - used < 2 * (MAX_TOKENS + 20)
    assert {row["outcome"] for row in rows} == {"ok", "refused"}


def test_concurrent_streams_never_exceed_a_usd_budget(proxy):
    # The server reads the router's prices as it starts: wait for them.
    deadline = time.monotonic() + 20
    while not proxy.db.query("SELECT 1 FROM accounts_modelprice WHERE model = %s", MODEL):
        assert time.monotonic() < deadline, "no prices"
        time.sleep(0.2)
    budget = Decimal("0.01")  # budgets are in cents
    key = _key(proxy, "--usd-budget", str(budget))
    tag = f"usd-{uuid.uuid4().hex}"
    # 500 prompt tokens as the fake router counts them (a word each): about $0.00009 a request.
    bursts = _until_refused(proxy, key, tag, prompt="lorem " * 500, max_tokens=MAX_TOKENS)
    rows = [row for burst in range(bursts) for row in _used(proxy, f"{tag}-{burst}", 100)]
    ok = [row for row in rows if row["outcome"] == "ok"]
    spent = sum(Decimal(str(row["cost_usd"])) for row in ok)
    print(f"\n{len(ok)} of {len(rows)} streams passed, ${spent} spent of a ${budget} budget")
    assert ok and all(row["cost_usd"] for row in ok)
    assert spent <= budget
