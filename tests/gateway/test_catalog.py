"""gateway.catalog: the router's model list, fetched once for concurrent misses and kept a while."""

import asyncio

import httpx
import pytest

from gateway import catalog
from gateway.exchange import Exchange
from gateway.upstream import UpstreamError
from tests.support.factories import caller
from tests.support.fake_router import MODELS


def exchange(**changes) -> Exchange:
    return Exchange(request_id="r", endpoint="models", caller=caller(**changes))


async def test_concurrent_misses_share_one_fetch_and_each_counts_its_own_attempts(hf):
    async def slow(request):
        await asyncio.sleep(0.05)
        return httpx.Response(200, json=MODELS)

    route = hf.get("/models").mock(side_effect=slow)
    first, second = exchange(), exchange()
    listings = await asyncio.gather(catalog.models(first), catalog.models(second))
    assert route.call_count == 1 and listings[0] is listings[1]
    assert first.upstream_attempts == 1  # the one that fetched


async def test_reset_forgets_the_list(hf):
    route = hf.get("/models").respond(200, json=MODELS)
    await catalog.models(exchange())
    await catalog.models(exchange())
    assert route.call_count == 1
    catalog.reset()
    await catalog.models(exchange())
    assert route.call_count == 2


async def test_a_failed_fetch_is_told_to_its_callers_and_not_kept(hf):
    route = hf.get("/models").mock(
        side_effect=[httpx.Response(500, text="boom")] * 2 + [httpx.Response(200, json=MODELS)]
    )
    with pytest.raises(UpstreamError):
        await catalog.models(exchange())
    assert (await catalog.models(exchange()))["object"] == "list"
    assert route.call_count == 3  # one retried failure, then a fresh fetch
