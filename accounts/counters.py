"""The limit counters' storage: batches of counter operations, in process memory or in Redis.

By default counters live in this process's memory; with REDIS_URL they live in Redis, so that
several workers and replicas share them. Either way a batch is atomic as a whole: in memory it
runs without an `await`, in Redis as one script (one command, one round trip, on redis-py's
asyncio client: no thread hop). What the counts mean is `accounts.limits`' business.

The operations (`Op`):
  ("add", key, delta, ttl)  create at 0 (expiring after ttl) if absent, add delta; → new value
  ("get", key)              → value or None
  ("bump", key, delta)      add delta only if present (absent starts from the database); → None
  ("seed", key, value, ttl) create at value if absent; → the value now there
"""

from __future__ import annotations

import time

from django.conf import settings

from accounts import runtime

Op = tuple
PREFIX = "hfproxy:limits:"  # every Redis key of ours starts so; nothing else there is touched


class MemoryCounters:
    """This process's memory: called directly, no I/O, no thread hop."""

    MAX_ENTRIES = 100_000  # made-up keys cannot grow memory without bound

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, float]] = {}  # key → (count, expiry on the monotonic clock)

    async def run(self, ops: list[Op]) -> list[int | None]:
        now = time.monotonic()
        return [self._one(now, *op) for op in ops]

    def _one(self, now: float, kind: str, key: str, value: int = 0, ttl: int = 0) -> int | None:
        found = self._counts.get(key)
        if found is not None and found[1] <= now:
            del self._counts[key]
            found = None
        if kind == "get":
            return None if found is None else found[0]
        if kind == "bump":
            if found is not None:
                self._counts[key] = (found[0] + value, found[1])  # the expiry stays, as in Redis
            return None
        if kind == "seed":
            if found is not None:
                return found[0]
            count = value
        else:  # add. As in Redis: never below zero, and the TTL counts from the last use.
            count = max(0, (found[0] if found else 0) + value)
        self._put(now, key, count, now + ttl)
        return count

    def _put(self, now: float, key: str, count: int, expiry: float) -> None:
        # Moved to the end on every write: "the oldest third" below is the least recently used.
        self._counts.pop(key, None)
        if len(self._counts) >= self.MAX_ENTRIES:
            # Full: drop what has expired; if that is not enough, the oldest third.
            live = {k: v for k, v in self._counts.items() if v[1] > now}
            if len(live) >= self.MAX_ENTRIES:
                live = dict(list(live.items())[self.MAX_ENTRIES // 3 :])
            self._counts = live
        self._counts[key] = (count, expiry)

    def clear(self) -> None:
        self._counts.clear()


# The ops of one batch, run by Redis as one script: one command, one reply, and the batch is
# atomic as a whole. ARGV holds kind, value, ttl for each key; `false` comes back as nil.
_BATCH = """
local out = {}
for i, key in ipairs(KEYS) do
  local kind, value, ttl = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  if kind == 'get' then
    out[i] = redis.call('GET', key)
  elseif kind == 'bump' then
    if redis.call('EXISTS', key) == 1 then redis.call('INCRBY', key, value) end
    out[i] = false
  elseif kind == 'add' then
    -- Never below zero (a release after its key expired), and the TTL counts from the last use.
    out[i] = math.max(0, redis.call('INCRBY', key, value))
    redis.call('SET', key, out[i], 'EX', ttl)
  else -- seed
    redis.call('SET', key, value, 'EX', ttl, 'NX')
    out[i] = redis.call('GET', key)
  end
end
return out
"""


class RedisCounters:
    """Redis through redis-py's asyncio client: a batch is one script call (EVALSHA)."""

    def __init__(self, url: str, prefix: str = PREFIX) -> None:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # Bounded waits, and no automatic retry: a batch re-sent after a lost reply would count
        # twice. A Redis that does not answer fails the request instead of hanging it.
        self.client = redis.asyncio.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
        )
        self.batch = self.client.register_script(_BATCH)
        self.prefix = prefix

    async def run(self, ops: list[Op]) -> list[int | None]:
        keys, args = [], []
        for kind, key, *rest in ops:
            value, ttl = [*rest, 0, 0][:2]
            keys.append(self.prefix + key)
            args += [kind, value, ttl]
        return [None if reply is None else int(reply) for reply in await self.batch(keys=keys, args=args)]

    async def aclose(self) -> None:
        await self.client.aclose()


_memory = MemoryCounters()  # the process's: shared by every loop, as its memory is
_redis = runtime.PerLoop(lambda: RedisCounters(settings.REDIS_URL), close=RedisCounters.aclose)


def store() -> MemoryCounters | RedisCounters:
    """Where the counters live: Redis with REDIS_URL (the running loop's client), else memory."""
    return _redis.get() if settings.REDIS_URL else _memory


def delete_all(url: str) -> int:
    """Delete our counters (keys under PREFIX) from the Redis database at `url`, and nothing
    else of it; returns how many there were."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
    try:
        deleted, batch = 0, []
        for key in client.scan_iter(match=PREFIX + "*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                deleted += client.delete(*batch)
                batch = []
        return deleted + (client.delete(*batch) if batch else 0)
    finally:
        client.close()


@runtime.resettable
def reset() -> None:
    """Every count back to zero, in memory and in Redis (tests; never the server)."""
    _memory.clear()
    if settings.REDIS_URL:
        delete_all(settings.REDIS_URL)
