"""The router's model catalogue, fetched on demand and kept for MODELS_CACHE_TTL seconds."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings

from gateway import converter, upstream
from gateway.reporting import Exchange

_cached: tuple[float, dict[str, Any]] | None = None


async def models(exchange: Exchange) -> dict[str, Any]:
    """The model list in OpenAI's shape, from the cache when it is fresh."""
    global _cached
    now = time.monotonic()
    if _cached is not None and now - _cached[0] < settings.MODELS_CACHE_TTL:
        return _cached[1]
    deadline = upstream.deadline()
    response = await upstream.send(
        "GET",
        "/models",
        token=exchange.caller.upstream_token,
        request_id=exchange.request_id,
        deadline=deadline,
    )
    listing = converter.models_list(converter.parse_answer(await upstream.read_body(response, deadline)))
    _cached = (now, listing)
    return listing


def clear() -> None:
    global _cached
    _cached = None
