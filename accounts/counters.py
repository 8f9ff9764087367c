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
  ("take", key, limit, ttl, holder)  a slot among at most `limit`, held by `holder` for ttl
                            seconds at most: → 1, or 0 when all are held (nothing changes). A
                            holder past its ttl no longer counts: a slot never given back (its
                            worker died, Redis was down) frees itself, and refusals renew nothing.
  ("free", key, holder)     give the holder's slot back (again: no harm); → None
  ("reserve", key, amount, limit)  add amount if the count stays within limit (and is below it
                            now). A batch's reserves are all or nothing: each is made only if
                            every one fits and none is absent. → the count after (>= 0); when
                            nothing was reserved, -1 - the count (< 0), or None if absent.

A Redis that does not answer raises `Unavailable`, at once while it failed moments ago.

`run_together` is `run` for a batch that reserves nothing (a request's settlement): in Redis,
the batches asked for in the same turn of the event loop go out as one script call, so that a
busy worker pays one round trip for many settlements, not one each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from django.conf import settings

from accounts import runtime

logger = logging.getLogger("hfproxy.limits")

Op = tuple
PREFIX = "hfproxy:limits:"  # REDIS_KEY_PREFIX's default: nothing else in that database is touched


class Unavailable(Exception):
    """Redis did not answer, or did not moments ago and was not asked again. `maybe_ran`: the
    batch went out and its answer did not come back (a timeout), so it may have run."""

    def __init__(self, message: str, maybe_ran: bool = False) -> None:
        super().__init__(message)
        self.maybe_ran = maybe_ran


class MemoryCounters:
    """This process's memory: called directly, no I/O, no thread hop."""

    MAX_ENTRIES = 100_000  # made-up keys cannot grow memory without bound

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, float]] = {}  # key → (count, expiry on the monotonic clock)
        self._slots: dict[str, dict[str, float]] = {}  # key → holder → deadline (monotonic)

    async def run(self, ops: list[Op]) -> list[int | None]:
        return self.run_now(ops)

    async def run_together(self, ops: list[Op]) -> list[int | None]:
        return self.run_now(ops)  # no I/O to share

    def send_together(self, ops: list[Op], unavailable: Callable[[], None]) -> None:
        self.run_now(ops)  # memory is never unavailable

    def run_now(self, ops: list[Op]) -> list[int | None]:
        """`run`, from synchronous code: nothing here waits."""
        now = time.monotonic()
        # The batch's reserves are all or nothing: first, whether every one fits.
        fits = all(
            (used := self._count(now, op[1])) is not None and _fits(used, *op[2:])
            for op in ops
            if op[0] == "reserve"
        )
        out = []
        for op in ops:
            if op[0] in ("take", "free"):
                out.append(self._slot(now, *op))
            elif op[0] == "reserve":
                out.append(self._reserve(now, fits, *op))
            else:
                out.append(self._one(now, *op))
        return out

    def _count(self, now: float, key: str) -> int | None:
        found = self._counts.get(key)
        return None if found is None or found[1] <= now else found[0]

    def _reserve(self, now: float, fits: bool, kind: str, key: str, amount: int, limit: int) -> int | None:
        used = self._count(now, key)
        if used is None:
            return None
        if not fits:
            return -1 - used
        self._counts[key] = (used + amount, self._counts[key][1])  # the expiry stays, as in Redis
        return used + amount

    def _slot(self, now: float, kind: str, key: str, *args) -> int | None:
        # Only keys with max_parallel have slots, and a key holds at most its limit: bounded.
        held = {holder: deadline for holder, deadline in self._slots.pop(key, {}).items() if deadline > now}
        if kind == "free":
            held.pop(args[0], None)
            taken = None
        else:
            limit, ttl, holder = args
            taken = int(len(held) < limit)
            if taken:
                held[holder] = now + ttl
        if held:
            self._slots[key] = held
        return taken

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
        self._slots.clear()


# The ops of one batch, run by Redis as one script: one command, one reply, and the batch is
# atomic as a whole. ARGV holds kind and three arguments for each key; `false` comes back as nil.
# A key's slots are a sorted set: its holders, scored by their deadlines on Redis' clock.
_BATCH = """
local out = {}
-- The batch's reserves are all or nothing: first, whether every one fits.
local fits = true
for i, key in ipairs(KEYS) do
  if ARGV[4 * i - 3] == 'reserve' then
    local used = redis.call('GET', key)
    local limit = tonumber(ARGV[4 * i - 1])
    if not used or tonumber(used) >= limit or tonumber(used) + tonumber(ARGV[4 * i - 2]) > limit then
      fits = false
    end
  end
end
for i, key in ipairs(KEYS) do
  local kind, value, ttl, holder = ARGV[4 * i - 3], ARGV[4 * i - 2], ARGV[4 * i - 1], ARGV[4 * i]
  if kind == 'reserve' then
    local used = redis.call('GET', key)
    if not used then
      out[i] = false
    elseif fits then
      out[i] = redis.call('INCRBY', key, value)
    else
      out[i] = -1 - tonumber(used)
    end
  elseif kind == 'take' then
    local time = redis.call('TIME')
    local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    if redis.call('ZCARD', key) < tonumber(value) then
      redis.call('ZADD', key, now + tonumber(ttl), holder)
      redis.call('EXPIRE', key, ttl)
      out[i] = 1
    else
      out[i] = 0
    end
  elseif kind == 'free' then
    redis.call('ZREM', key, value)
    out[i] = false
  elseif kind == 'get' then
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
    """Redis through redis-py's asyncio client: a batch is one script call (EVALSHA).

    At most `max_connections` calls at once, each on a connection of a bounded pool; a burst
    waits its turn (at most TURN_WAITS × `timeout`, then `Unavailable`: a busy worker's loop is
    slow to hand turns on, and that is not Redis failing), never a failure for want of a
    connection. Once Redis failed, calls fail at once for DOWN_FOR seconds, those waiting their
    turn included; then one call at a time tries it until one gets through: a Redis that drops
    packets costs one call's deadline (`timeout` to connect, `timeout` for the answer) at a
    time, not one per request."""

    DOWN_FOR = 1.0
    TURN_WAITS = 10

    def __init__(
        self, url: str, prefix: str = PREFIX, max_connections: int = 50, timeout: float = 1.0
    ) -> None:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError

        # One retry on a connection found closed (Redis restarted, or a proxy on the way cut
        # it): the batch did not run. None after a timeout: that batch may have run, and
        # re-sent it would count twice.
        # A plain pool: `turns` already holds the calls to `max_connections`, so it never runs
        # short (the blocking pool's condition and timer on every call bought nothing). No
        # socket timeout either: redis-py then wraps every write in `asyncio.wait_for` (a task
        # per call) and every read in a timer; one deadline per call (`_tried`) bounds both.
        pool = redis.asyncio.ConnectionPool.from_url(
            url,
            max_connections=max_connections,
            socket_timeout=None,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)),
        )
        self.client = redis.asyncio.Redis(connection_pool=pool)
        self.batch = self.client.register_script(_BATCH)
        self.prefix = prefix
        self.timeout = timeout
        # The turns, here rather than in the pool's queue: a call that waited sees that Redis
        # failed meanwhile, and a long wait is not mistaken for Redis failing.
        self.turns = asyncio.Semaphore(max_connections)
        self.down_until = 0.0  # 0: Redis answered last time
        # run_together's next call: each batch with its future, or the callback of a batch
        # sent without waiting (send_together) for when the call fails.
        self._joining: list[tuple[list[Op], asyncio.Future | Callable[[], None]]] | None = None

    async def run(self, ops: list[Op]) -> list[int | None]:
        keys, args = [], []
        for kind, key, *rest in ops:
            keys.append(self.prefix + key)
            args += [kind, *[*rest, 0, 0, 0][:3]]
        replies = await self._call(lambda: self.batch(keys=keys, args=args))
        return [None if reply is None else int(reply) for reply in replies]

    async def run_together(self, ops: list[Op]) -> list[int | None]:
        """`run`, in one script call with the other batches asked for in this turn of the loop:
        each gets its own replies, or the call's `Unavailable`. Only for batches without
        reserves (a batch's reserves are all or nothing: joined, they would depend on others')."""
        if any(op[0] == "reserve" for op in ops):
            return await self.run(ops)
        future = asyncio.get_running_loop().create_future()
        self._join(ops, future)
        return await future

    def send_together(self, ops: list[Op], unavailable: Callable[[], None]) -> None:
        """`run_together` without waiting for the replies, from synchronous code (a request's
        settlement, as it finishes: no task of its own); `unavailable()` if the call fails."""
        self._join(ops, unavailable)

    def _join(self, ops: list[Op], waiter: asyncio.Future | Callable[[], None]) -> None:
        if self._joining is None:
            self._joining = []
            runtime.spawn(self._send_joined())
        self._joining.append((ops, waiter))

    async def _send_joined(self) -> None:
        # One turn of the loop first: the settlements of the requests that end in the same
        # turn (their answers came in one read of the sockets) join this call.
        await asyncio.sleep(0)
        joined, self._joining = self._joining or [], None
        futures = [waiter for _, waiter in joined if isinstance(waiter, asyncio.Future)]
        try:
            replies = await self.run([op for ops, _ in joined for op in ops])
        except Unavailable as exc:
            for _, waiter in joined:
                if not isinstance(waiter, asyncio.Future):
                    waiter()
                elif not waiter.done():  # each its own: raised in as many tasks
                    waiter.set_exception(Unavailable(str(exc), maybe_ran=exc.maybe_ran))
            return
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        except Exception as exc:
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            if len(futures) < len(joined):
                raise  # logged by the loop: a settlement sent without waiting has no one to tell
            return
        start = 0
        for ops, waiter in joined:
            if isinstance(waiter, asyncio.Future) and not waiter.done():
                waiter.set_result(replies[start : start + len(ops)])
            start += len(ops)

    async def ping(self) -> None:
        """Whether Redis answers (`Unavailable` if not), as a batch would find out."""
        await self._call(self.client.ping)

    async def _call(self, call):
        self._fail_fast(probe=False)  # not even waiting for a turn
        if self.turns.locked():  # a turn to wait for (a free one is taken without a timer)
            try:
                async with asyncio.timeout(self.TURN_WAITS * self.timeout):
                    await self.turns.acquire()
            except TimeoutError:
                raise Unavailable("every connection to Redis stayed busy") from None
        else:
            await self.turns.acquire()
        try:
            self._fail_fast(probe=True)
            return await self._tried(call)
        finally:
            self.turns.release()

    def _fail_fast(self, probe: bool) -> None:
        now = time.monotonic()
        if now < self.down_until:
            raise Unavailable("Redis did not answer moments ago")
        if probe and self.down_until:  # this call probes; the others keep failing fast meanwhile
            self.down_until = now + 3 * self.timeout + self.DOWN_FOR

    async def _tried(self, call):
        from redis import exceptions

        try:
            # A `timeout` to connect and one for the answer, as redis-py's socket timeouts gave,
            # as one deadline. A call cut off by it drops its connection (redis-py disconnects
            # one whose command was cancelled).
            async with asyncio.timeout(2 * self.timeout):
                result = await call()
        except (exceptions.RedisError, TimeoutError) as exc:
            timed_out = isinstance(exc, (exceptions.TimeoutError, TimeoutError))
            if not self.down_until:
                reason = str(exc) or "no answer in time"
                logger.warning("Redis does not answer (%s): limited keys are %s", reason, _policy())
            self.down_until = time.monotonic() + self.DOWN_FOR
            raise Unavailable(str(exc) or "Redis did not answer in time", maybe_ran=timed_out) from exc
        if self.down_until:
            logger.warning("Redis answers again")
            self.down_until = 0.0
        return result

    async def aclose(self) -> None:
        await self.client.aclose()


def _fits(used: int, amount: int, limit: int) -> bool:
    """A reserve's rule (the script's too): below the limit now, and within it after."""
    return used < limit and used + amount <= limit


def _policy() -> str:
    return "counted by each worker (LIMITS_FAIL_OPEN)" if settings.LIMITS_FAIL_OPEN else "refused (503)"


def _redis_counters() -> RedisCounters:
    return RedisCounters(
        settings.REDIS_URL,
        prefix=settings.REDIS_KEY_PREFIX,
        max_connections=settings.REDIS_MAX_CONNECTIONS,
        timeout=settings.REDIS_TIMEOUT,
    )


_memory = MemoryCounters()  # the process's: shared by every loop, as its memory is
_redis = runtime.PerLoop(_redis_counters, close=RedisCounters.aclose)


Store = MemoryCounters | RedisCounters


def store() -> Store:
    """Where the counters live: Redis with REDIS_URL (the running loop's client), else memory."""
    return _redis.get() if settings.REDIS_URL else _memory


async def run(ops: list[Op], lost=None) -> tuple[Store, list[int | None]]:
    """Run a batch where the counters live, and say where it ran. Redis unavailable: raise
    `Unavailable` (fail closed, the default), or with LIMITS_FAIL_OPEN count in this process's
    memory, as without Redis. `lost(where)`: called when the batch may have run in Redis all the
    same (its answer was lost), before either, so that what it took there can be given back."""
    where = store()
    try:
        return where, await where.run(ops)
    except Unavailable as unavailable:
        if unavailable.maybe_ran and lost is not None:
            lost(where)
        if not settings.LIMITS_FAIL_OPEN:
            raise
        return _memory, await _memory.run(ops)


async def redis_health() -> str:
    """/health's word on Redis: "ok", "unavailable", or "off" (no REDIS_URL)."""
    if not settings.REDIS_URL:
        return "off"
    try:
        await _redis.get().ping()
    except Unavailable:
        return "unavailable"
    return "ok"


def delete_all(url: str, prefix: str = PREFIX) -> int:
    """Delete our counters (keys under `prefix`) from the Redis database at `url`, and nothing
    else of it; returns how many there were."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
    try:
        deleted, batch = 0, []
        for key in client.scan_iter(match=prefix + "*", count=1000):
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
        delete_all(settings.REDIS_URL, settings.REDIS_KEY_PREFIX)
