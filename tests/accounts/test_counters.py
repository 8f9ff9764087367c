"""accounts.counters: the limit counters' operations, the same in process memory and in Redis."""

import asyncio
import os
import time
import uuid

import pytest

from accounts import counters as storage
from tests.support.processes import free_port, require
from tests.support.tcpproxy import TcpProxy

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


@pytest.fixture(params=["memory", "redis"])
async def counters(request):
    if request.param == "memory":
        yield storage.MemoryCounters()
        return
    require(REDIS_URL)
    # Keys of this run alone (they expire within a minute): other runs on the same database
    # reset the counters' own prefix whenever they like.
    store = storage.RedisCounters(REDIS_URL, prefix=f"hfproxy-test:{uuid.uuid4().hex}:")
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


async def test_memory_is_bounded_and_drops_what_expired_first(monkeypatch):
    store = storage.MemoryCounters()
    monkeypatch.setattr(store, "MAX_ENTRIES", 6)
    await store.run([("add", f"old{i}", 1, 0.05) for i in range(3)])
    await store.run([("add", f"live{i}", 1, 60) for i in range(3)])
    await asyncio.sleep(0.06)
    await store.run([("add", "new", 1, 60)])  # full: the expired go, every live count stays
    assert await store.run([("get", f"live{i}") for i in range(3)] + [("get", "new")]) == [1, 1, 1, 1]
    await store.run([("add", f"more{i}", 1, 60) for i in range(3)])  # full of live ones: the oldest go
    assert len(store._counts) <= 6
    assert await store.run([("get", "more2")]) == [1]


def test_deleting_ours_leaves_the_rest_of_the_database():
    require(REDIS_URL)
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.set("not-ours:kept", 1, ex=60)
    client.set(storage.PREFIX + "rpm:1:2", 1, ex=60)
    try:
        assert storage.delete_all(REDIS_URL) >= 1
        assert client.get("not-ours:kept") == b"1"
        assert not list(client.scan_iter(match=storage.PREFIX + "*"))
    finally:
        client.delete("not-ours:kept")
        client.close()


async def test_the_store_is_memory_unless_redis_is_set(settings):
    settings.REDIS_URL = ""
    assert isinstance(storage.store(), storage.MemoryCounters)
    assert storage.store() is storage.store()


async def test_a_slot_is_held_until_freed_or_its_deadline_and_refusals_renew_nothing(counters):
    def take(holder, ttl=5):
        return ("take", "slots", 2, ttl, holder)

    assert await counters.run([take("a"), take("b"), take("c")]) == [1, 1, 0]
    assert await counters.run([("free", "slots", "a"), ("free", "slots", "a")]) == [None, None]
    assert await counters.run([take("c"), take("d", 60)]) == [1, 0]
    started = time.monotonic()
    # Refused again and again (a client retrying): the holders' deadlines stay where they were
    # (5 s; a busy machine may stretch these 1.5 s to 5 without changing the result)…
    for _ in range(3):
        assert await counters.run([take("d", 60)]) == [0]
        await asyncio.sleep(0.5)
    # … and the slots free themselves there (never given back: their requests' workers died).
    await asyncio.sleep(max(0.0, 5.2 - (time.monotonic() - started)))
    assert await counters.run([take("d", 60), take("e", 60), take("f", 60)]) == [1, 1, 0]


async def test_a_batchs_reservations_are_all_or_nothing(counters):
    seed = [("seed", "tokens", 60, 60), ("seed", "usd", 0, 60)]
    assert await counters.run(seed) == [60, 0]
    # Both fit: both are made; the result is the count after.
    assert await counters.run([("reserve", "tokens", 30, 100), ("reserve", "usd", 5, 10)]) == [90, 5]
    # The second does not fit: neither is made; each says its count as -1 - count.
    assert await counters.run([("reserve", "tokens", 10, 100), ("reserve", "usd", 6, 10)]) == [-91, -6]
    assert await counters.run([("get", "tokens"), ("get", "usd")]) == [90, 5]
    # Exactly to the limit fits; at the limit, even nothing does not (a budget used up).
    assert await counters.run([("reserve", "tokens", 10, 100)]) == [100]
    assert await counters.run([("reserve", "tokens", 0, 100)]) == [-101]
    # A counter not seeded yet: None, and nothing is reserved anywhere in the batch.
    assert await counters.run([("reserve", "usd", 1, 10), ("reserve", "absent", 1, 10)]) == [-6, None]
    # Settling gives back what was not used.
    assert await counters.run([("bump", "tokens", -25), ("get", "tokens")]) == [None, 75]


async def test_batches_run_together_get_their_own_replies(counters):
    first, second, third = await asyncio.gather(
        counters.run_together([("add", "t", 2, 60), ("get", "t")]),
        counters.run_together([("add", "t", 3, 60)]),
        counters.run_together([("bump", "t", 10), ("get", "t"), ("get", "nothing")]),
    )
    assert (first, second, third) == ([2, 2], [5], [None, 15, None])


def _counted_store() -> tuple[storage.RedisCounters, list[int]]:
    """A Redis store of this test's own, and the size of every call it makes to Redis."""
    require(REDIS_URL)
    store = storage.RedisCounters(REDIS_URL, prefix=f"hfproxy-test:{uuid.uuid4().hex}:")
    calls = []
    run = store.run

    async def counted(ops):
        calls.append(len(ops))
        return await run(ops)

    store.run = counted
    return store, calls


async def test_batches_run_together_are_one_redis_call():
    store, calls = _counted_store()
    try:
        counts = await asyncio.gather(*(store.run_together([("add", "joined", 1, 60)]) for _ in range(50)))
        assert sorted(count for [count] in counts) == list(range(1, 51))
        assert calls == [50]
        # A batch with reserves keeps its own call: they are all or nothing within it.
        assert await store.run_together([("reserve", "joined", 1, 100)]) == [51]
        assert calls == [50, 1]
    finally:
        await store.aclose()


async def test_batches_sent_without_waiting_join_the_same_call_and_hear_of_a_failure():
    store, calls = _counted_store()
    failed = []
    try:
        for _ in range(3):
            store.send_together([("add", "sent", 1, 60)], lambda: failed.append(1))
        assert await store.run_together([("get", "sent")]) == [3]
        assert calls == [4] and failed == []
    finally:
        await store.aclose()
    unreachable = storage.RedisCounters(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    try:
        unreachable.send_together([("free", "slots", "holder")], lambda: failed.append("told"))
        with pytest.raises(storage.Unavailable):
            await unreachable.run_together([("get", "a")])
        assert failed == ["told"]
    finally:
        await unreachable.aclose()


async def test_batches_run_together_each_hear_that_redis_is_unavailable():
    store = storage.RedisCounters(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    try:
        calls = await asyncio.gather(
            *(store.run_together([("free", "slots", "holder")]) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(call, storage.Unavailable) for call in calls)
        assert len({id(call) for call in calls}) == 3
    finally:
        await store.aclose()


async def test_an_unreachable_redis_fails_at_once_after_the_first_try():
    port = free_port()  # nothing listens there
    store = storage.RedisCounters(f"redis://127.0.0.1:{port}/0", timeout=0.5)
    try:
        with pytest.raises(storage.Unavailable) as refused:
            await store.run([("get", "a")])
        assert not refused.value.maybe_ran  # no connection: nothing went out
        started = time.monotonic()
        with pytest.raises(storage.Unavailable, match="moments ago"):
            await store.ping()
        assert time.monotonic() - started < 0.1  # not tried again
    finally:
        await store.aclose()


async def test_a_silent_redis_costs_one_timeout_not_one_per_call():
    link = TcpProxy("127.0.0.1", 6379)
    link.start()
    link.set("blackhole")
    store = storage.RedisCounters(f"redis://127.0.0.1:{link.port}/0", timeout=0.5)
    try:
        started = time.monotonic()
        calls = await asyncio.gather(*(store.run([("get", "a")]) for _ in range(200)), return_exceptions=True)
        assert all(isinstance(call, storage.Unavailable) for call in calls)
        assert any(call.maybe_ran for call in calls)  # sent, and no answer: it may have run
        assert time.monotonic() - started < 5  # 200 times 0.5 s one after the other would be 100 s
    finally:
        await store.aclose()
        link.stop()


async def test_a_burst_waits_for_the_pools_connections():
    require(REDIS_URL)
    store = storage.RedisCounters(REDIS_URL, prefix=f"hfproxy-test:{uuid.uuid4().hex}:", max_connections=2)
    try:
        counts = await asyncio.gather(*(store.run([("add", "burst", 1, 60)]) for _ in range(300)))
        assert sorted(count for [count] in counts) == list(range(1, 301))
        pool = store.client.connection_pool
        assert len(pool._available_connections) + len(pool._in_use_connections) <= 2
    finally:
        await store.aclose()
