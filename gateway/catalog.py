"""The router's model catalogue, fetched on demand and kept for MODELS_CACHE_TTL seconds."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from django.conf import settings

from accounts import offloop, prices, runtime
from gateway import converter, errors, modellist, upstream
from gateway.exchange import Exchange

logger = logging.getLogger("hfproxy.prices")


class _Listing:
    """The last list fetched, and when (on the monotonic clock)."""

    models: dict[str, Any] | None = None
    fetched_at = 0.0


_cache = _Listing()
# The running loop's fetches by upstream token: a failure is told to its own callers.
_fetching: runtime.PerLoop[dict[str, asyncio.Task]] = runtime.PerLoop(dict)


async def models(exchange: Exchange) -> dict[str, Any]:
    """The model list in OpenAI's shape, from the cache when it is fresh.

    Concurrent misses with the same token share one fetch; a client that leaves does not
    cancel it for the rest.
    """
    caller = exchange.caller
    if not caller.upstream_token:
        raise errors.no_upstream_token(caller.token_problem, caller.token_name)
    if _cache.models is not None and time.monotonic() - _cache.fetched_at < settings.MODELS_CACHE_TTL:
        return _cache.models
    fetching = _fetching.get()
    task = fetching.get(caller.upstream_token)
    if task is None or task.done():
        task = fetching[caller.upstream_token] = asyncio.ensure_future(_fetch(exchange))
        # Mark a failure as seen even when every waiter has left (no "never retrieved" warning).
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        task.add_done_callback(lambda done: fetching.pop(caller.upstream_token, None))
    return await asyncio.shield(task)


async def _fetch(exchange: Exchange) -> dict[str, Any]:
    deadline = upstream.deadline()
    response = await exchange.send("GET", "/models", deadline)
    listing = modellist.models_list(converter.parse_answer(await upstream.read_body(response, deadline)))
    _cache.models, _cache.fetched_at = listing, time.monotonic()
    return listing


@runtime.resettable
def reset() -> None:
    """Fetch the list afresh next time (tests)."""
    _cache.models = None
    _fetching.drop()


async def refresh_prices() -> tuple[int, int]:
    """The price table from the router's model list, fetched with the server's HF_TOKEN."""
    deadline = upstream.deadline()
    response = await upstream.send(
        "GET", "/models", token=settings.HF_TOKEN, request_id=f"prices-{uuid.uuid4().hex}", deadline=deadline
    )
    listing = converter.parse_answer(await upstream.read_body(response, deadline))
    return await offloop.run(prices.refresh, listing)


async def refresh_prices_every(seconds: float) -> None:
    """`refresh_prices` now and every `seconds` (each worker: upserts are idempotent)."""
    failures = 0
    while True:
        try:
            written, kept = await refresh_prices()
            logger.info("prices refreshed: %d from the router, %d custom kept", written, kept)
            failures = 0
        except Exception as error:  # the router or the database down: soon again, not in hours
            failures += 1
            logger.warning("Refreshing prices failed (%d in a row): %s", failures, error)
        await asyncio.sleep(min(seconds, 30 * 2**failures) if failures else seconds)
