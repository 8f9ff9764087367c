"""The router's model catalogue, and each model's providers from the Hub (for images), fetched on
demand and kept for MODELS_CACHE_TTL seconds."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from django.conf import settings

from accounts import offloop, prices, runtime
from gateway import converter, errors, images, modellist, scrub, upstream
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
    return await _shared(_fetching.get(), caller.upstream_token, lambda: _fetch(exchange))


async def _shared(
    fetching: dict[Hashable, asyncio.Task], key: Hashable, fetch: Callable[[], Awaitable]
) -> Any:
    """The running fetch for `key`, or a new one: callers with the same key share it, and one
    who leaves does not cancel it for the rest."""
    task = fetching.get(key)
    if task is None or task.done():
        task = fetching[key] = asyncio.ensure_future(fetch())
        # Mark a failure as seen even when every waiter has left (no "never retrieved" warning).
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        task.add_done_callback(lambda done: fetching.pop(key, None))
    return await asyncio.shield(task)


async def _fetch(exchange: Exchange) -> dict[str, Any]:
    deadline = upstream.deadline()
    response = await exchange.send("GET", "/models", deadline)
    listing = modellist.models_list(converter.parse_answer(await exchange.read(response, deadline)))
    _cache.models, _cache.fetched_at = listing, time.monotonic()
    return listing


# Each model's providers, by upstream token and model id (a token may see private models that
# another may not): when fetched, and what the Hub said. At most MAPPINGS_KEPT, oldest out first.
_mappings: dict[tuple[str, str], tuple[float, list[images.ProviderOffer]]] = {}
_fetching_mappings: runtime.PerLoop[dict[tuple[str, str], asyncio.Task]] = runtime.PerLoop(dict)
MAPPINGS_KEPT = 1000


async def provider_mapping(exchange: Exchange, model: str) -> list[images.ProviderOffer]:
    """Which providers serve `model` (a Hugging Face model id), under which ids and for which
    task: the Hub's `inferenceProviderMapping`, from the cache when it is fresh. Concurrent
    misses share one fetch. A model the Hub does not know is a 404 `model_not_found`."""
    key = (exchange.caller.upstream_token, model)
    kept = _mappings.get(key)
    if kept is not None and time.monotonic() - kept[0] < settings.MODELS_CACHE_TTL:
        return kept[1]
    return await _shared(_fetching_mappings.get(), key, lambda: _fetch_mapping(exchange, key))


async def _fetch_mapping(exchange: Exchange, key: tuple[str, str]) -> list[images.ProviderOffer]:
    token, model = key
    deadline = upstream.deadline()
    try:
        # Not one of the request's router attempts: shared, and made once a while.
        response = await upstream.send(
            "GET",
            f"/api/models/{model}?expand[]=inferenceProviderMapping",
            token=token,
            request_id=exchange.request_id,
            deadline=deadline,
            base=settings.HF_HUB_URL,
        )
    except upstream.UpstreamError as error:
        # The Hub answers 401 `RepoNotFound` for a repository the token may not see, 404 for none.
        if error.status == 404 or error.headers.get("x-error-code") == "RepoNotFound":
            raise errors.not_found(
                f"The Hugging Face Hub has no model `{model}` (or none this key's token may see).",
                code="model_not_found",
            ) from None
        raise
    offers = images.provider_mapping(converter.parse_answer(await exchange.read(response, deadline)))
    _mappings.pop(key, None)
    while len(_mappings) >= MAPPINGS_KEPT:
        del _mappings[next(iter(_mappings))]
    _mappings[key] = (time.monotonic(), offers)
    return offers


@runtime.resettable
def reset() -> None:
    """Fetch the list and the providers afresh next time (tests)."""
    _cache.models = None
    _fetching.drop()
    _mappings.clear()
    _fetching_mappings.drop()


async def refresh_prices() -> tuple[int, int]:
    """The price table from the router's model list, fetched with the server's HF_TOKEN."""
    deadline = upstream.deadline()
    response = await upstream.send(
        "GET", "/models", token=settings.HF_TOKEN, request_id=f"prices-{uuid.uuid4().hex}", deadline=deadline
    )
    raw = scrub.raw(await upstream.read_body(response, deadline), scrub.secrets_of(settings.HF_TOKEN))
    return await offloop.run(prices.refresh, converter.parse_answer(raw))


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
