"""Database work from the event loop, on the API path."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.db import connections

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


async def run(function, *args):
    """`function(*args)` in a worker thread, its database connection returned when it is done."""
    return await sync_to_async(_returning_connections, thread_sensitive=False, executor=_executor)(
        function, args
    )
