"""Database work from the event loop, on the API path."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.db import OperationalError, connections

# Its own few threads: a flood of lookups (made-up keys) queues here, not in the loop's default
# executor, which the upstream client's DNS lookups need.
_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hfproxy-db")


def _returning_connections(function, args):
    try:
        return function(*args)
    finally:
        # Back to the pool (or closed) at once: API requests have no request-scoped connection
        # for Django's request_finished signal to recycle (see gateway.asgi.Handler).
        connections.close_all()


# After a failure to reach the database, calls fail at once for this long: while it is down,
# each would otherwise wait DB_POOL_TIMEOUT for a connection, and requests pile up behind them.
DOWN_FOR = 1.0
_down_until = 0.0


class DatabaseDown(OperationalError):
    """The database failed moments ago; not tried again yet."""


def forget_failure() -> None:
    """Try the database on the next call (tests)."""
    global _down_until
    _down_until = 0.0


async def run(function, *args):
    """`function(*args)` in a worker thread, its database connection returned when it is done.

    Raises `django.db.DatabaseError` as the function does, or `DatabaseDown` without trying
    when the database could not be reached less than DOWN_FOR seconds ago."""
    global _down_until
    if time.monotonic() < _down_until:
        raise DatabaseDown("the database did not answer moments ago")
    try:
        return await sync_to_async(_returning_connections, thread_sensitive=False, executor=_executor)(
            function, args
        )
    except OperationalError:
        _down_until = time.monotonic() + DOWN_FOR
        raise
