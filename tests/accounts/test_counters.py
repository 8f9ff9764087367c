"""The limit counters' operations, the same in process memory and in Redis."""

import asyncio
import os

import pytest
import redis

from accounts import limits
from tests.servers import require

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


@pytest.fixture(params=["memory", "redis"])
async def counters(request):
    if request.param == "memory":
        yield limits._LocalCounters()
        return
    require(REDIS_URL)
    redis.Redis.from_url(REDIS_URL).flushdb()
    store = limits._RedisCounters(REDIS_URL)
    yield store
    await store.aclose()


async def test_the_operations(counters):
    assert await counters.run([("get", "a"), ("add", "a", 2, 60), ("add", "a", 3, 60), ("get", "a")]) == [
        None,
        2,
        5,
        5,
    ]
    # bump counts only a counter that exists; seed never overwrites one
    assert await counters.run([("bump", "b", 7), ("get", "b"), ("bump", "a", 1), ("get", "a")]) == [
        None,
        None,
        None,
        6,
    ]
    assert await counters.run([("seed", "b", 40, 60), ("seed", "b", 99, 60), ("add", "b", -1, 60)]) == [
        40,
        40,
        39,
    ]
    assert await counters.run([]) == []


async def test_counters_expire(counters):
    await counters.run([("add", "short", 1, 1), ("seed", "seeded", 5, 1)])
    await asyncio.sleep(1.2)
    assert await counters.run([("get", "short"), ("get", "seeded"), ("add", "short", 1, 60)]) == [
        None,
        None,
        1,
    ]


async def test_a_count_never_goes_below_zero_and_lives_from_its_last_use(counters):
    assert await counters.run([("add", "slots", -1, 60), ("add", "slots", 1, 60)]) == [0, 1]
    # TTL 4 s, used again after 2.5 s, read 2.5 s later: past the first TTL, within the second;
    # a busy machine may delay each step by up to 1.5 s without moving the result.
    await counters.run([("add", "busy", 1, 4)])
    await asyncio.sleep(2.5)
    await counters.run([("add", "busy", 1, 4)])  # used again: a full TTL from now
    await asyncio.sleep(2.5)
    assert await counters.run([("get", "busy")]) == [2]
