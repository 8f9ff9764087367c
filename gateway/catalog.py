"""The router's model catalogue, fetched on demand and kept for MODELS_CACHE_TTL seconds."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from django.conf import settings

from gateway import converter, upstream
from gateway.reporting import Exchange

_cached: tuple[float, dict[str, Any]] | None = None
_fetching: asyncio.Task | None = None


async def models(exchange: Exchange) -> dict[str, Any]:
    """The model list in OpenAI's shape, from the cache when it is fresh.

    Concurrent misses share one fetch; a client that leaves does not cancel it for the rest.
    """
    global _fetching
    if _cached is not None and time.monotonic() - _cached[0] < settings.MODELS_CACHE_TTL:
        return _cached[1]
    if _fetching is None or _fetching.done() or _fetching.get_loop() is not asyncio.get_running_loop():
        _fetching = asyncio.ensure_future(_fetch(exchange))
        # Mark a failure as seen even when every waiter has left (no "never retrieved" warning).
        _fetching.add_done_callback(lambda task: task.cancelled() or task.exception())
    return await asyncio.shield(_fetching)


async def _fetch(exchange: Exchange) -> dict[str, Any]:
    global _cached
    deadline = upstream.deadline()
    response = await upstream.send(
        "GET",
        "/models",
        token=exchange.caller.upstream_token,
        request_id=exchange.request_id,
        deadline=deadline,
    )
    listing = converter.models_list(converter.parse_answer(await upstream.read_body(response, deadline)))
    _cached = (time.monotonic(), listing)
    return listing


def clear() -> None:
    global _cached, _fetching
    _cached, _fetching = None, None
