"""Database work from the event loop, on the API path."""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.db import InterfaceError, OperationalError, connections

from accounts import runtime

# Its own few threads: a flood of lookups (made-up keys) queues here, not in the loop's default
# executor, which the upstream client's DNS lookups need.
_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hfproxy-db")

# With the database unreachable, each call would wait DB_POOL_TIMEOUT for a connection and the
# calls would queue four at a time behind each other. After such a failure, calls fail at once
# for DOWN_FOR seconds; then one call at a time probes (given PROBE_FOR) until one gets through.
DOWN_FOR = 1.0
PROBE_FOR = 5.0  # longer than a pool wait


class _Breaker:
    down_until = 0.0  # 0: the database answered last time


_breaker = _Breaker()


class DatabaseDown(OperationalError):
    """The database could not be reached moments ago; not tried again yet."""


@runtime.resettable
def reset() -> None:
    """Try the database on the next call (tests)."""
    _breaker.down_until = 0.0


def _unreachable(exc: BaseException) -> bool:
    """A failure to reach the server, not of one statement (a deadlock, a locked SQLite file)."""
    import psycopg  # only a PostgreSQL server can be down; this is its driver

    cause = exc.__cause__
    return isinstance(exc, InterfaceError) or (
        isinstance(cause, psycopg.OperationalError) and (cause.sqlstate or "08").startswith("08")
    )


def drop_dead_connections() -> None:
    """After a failure to reach the server: the pool checks its idle connections and drops
    those that died with it (a restarted server), so the next calls connect afresh. Only then,
    not on every checkout, where a check would cost a round trip each time."""
    pool = getattr(connections["default"], "pool", None)
    if pool is not None:
        with contextlib.suppress(Exception):  # still down: the pool reconnects in the background
            pool.check()


def _returning_connections(function, args, probe: bool):
    if not probe and time.monotonic() < _breaker.down_until:
        raise DatabaseDown("the database did not answer moments ago")  # failed while this waited
    try:
        result = function(*args)
    except (OperationalError, InterfaceError) as exc:
        # Here, not back on the loop: the next queued call must already see it.
        if probe or _unreachable(exc):
            _breaker.down_until = time.monotonic() + DOWN_FOR
            drop_dead_connections()
        raise
    finally:
        # Back to the pool (or closed) at once: API requests have no request-scoped connection
        # for Django's request_finished signal to recycle (see gateway.handler).
        connections.close_all()
    _breaker.down_until = 0.0
    return result


async def run(function, *args):
    """`function(*args)` in a worker thread, its database connection returned when it is done.

    Raises `django.db.DatabaseError` as the function does, or `DatabaseDown` at once while the
    database is known to be unreachable."""
    now = time.monotonic()
    if now < _breaker.down_until:
        raise DatabaseDown("the database did not answer moments ago")
    probe = _breaker.down_until > 0
    if probe:
        _breaker.down_until = now + PROBE_FOR  # the others keep failing fast while this one tries
    # A cancelled caller leaves its thread running: the thread's outcome still sets the state.
    return await sync_to_async(_returning_connections, thread_sensitive=False, executor=_executor)(
        function, args, probe
    )
