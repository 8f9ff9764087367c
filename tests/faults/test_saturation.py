"""Saturation: one key's many streams against a worker's pool of router connections (issue 16,
point 4). With its share (KEY_MAX_IN_FLIGHT), a key cannot take the whole pool and another key is
still served; without it, a full pool is the proxy's 503 `proxy_saturated`, and the router is
never called for what did not fit."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from tests.support.harness import chat, launch_proxy, request_id
from tests.support.processes import scratch_database

POOL = 20
SHARE = 10
# The pool's wait (CONNECT_TIMEOUT) must end before a read would: READ_TIMEOUT has headroom.
SETTINGS = {"UPSTREAM_MAX_CONNECTIONS": str(POOL), "READ_TIMEOUT": "10", "REQUEST_TIMEOUT": "60"}


@contextlib.contextmanager
def proxy_with(router, folder, **settings):
    with scratch_database(folder) as database:
        proxy = launch_proxy(router, database, folder, **SETTINGS, **settings)
        try:
            yield proxy
        finally:
            proxy.stop()


@pytest.fixture(scope="module")
def shared(router, tmp_path_factory):
    with proxy_with(router, tmp_path_factory.mktemp("share"), KEY_MAX_IN_FLIGHT=str(SHARE)) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def unshared(router, tmp_path_factory):
    with proxy_with(router, tmp_path_factory.mktemp("noshare"), KEY_MAX_IN_FLIGHT="0") as proxy:
        yield proxy


class Streams:
    """Streams held open by one client until it leaves: each request's id and status."""

    def __init__(self, proxy, key: str) -> None:
        self.proxy, self.key = proxy, key
        self.stack = contextlib.AsyncExitStack()
        self.opened: list[tuple[str, httpx.Response]] = []

    async def __aenter__(self) -> Streams:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        self.client = await self.stack.enter_async_context(httpx.AsyncClient(timeout=30, limits=limits))
        return self

    async def open(self, count: int, model: str = "fault/drip") -> None:
        """`count` streams at once; each that is served has sent its first event."""
        self.opened += await asyncio.gather(*(self._one(model) for _ in range(count)))

    async def _one(self, model: str) -> tuple[str, httpx.Response]:
        rid = request_id()
        headers = {**self.proxy.auth(self.key), "X-Request-Id": rid}
        request = self.client.build_request(
            "POST", self.proxy.api + "/chat/completions", json=chat(model, True), headers=headers
        )
        response = await self.client.send(request, stream=True)
        if response.status_code == 200:
            chunks = response.aiter_raw()  # kept: a generator dropped would close the stream
            await anext(chunks)  # served: its stream holds a router connection
            self.stack.push_async_callback(response.aclose)
            self.stack.push_async_callback(chunks.aclose)
        else:
            await response.aread()
            await response.aclose()
        return rid, response

    def with_status(self, status: int) -> list[tuple[str, httpx.Response]]:
        return [(rid, response) for rid, response in self.opened if response.status_code == status]

    async def __aexit__(self, *exc) -> None:
        await self.stack.aclose()  # the client leaves every stream it holds


async def ask(proxy, key: str, model: str = "openai/gpt-oss-120b:fireworks-ai") -> tuple[str, httpx.Response]:
    rid = request_id()
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            proxy.api + "/chat/completions",
            json=chat(model),
            headers={**proxy.auth(key), "X-Request-Id": rid},
        )
    return rid, response


def test_one_key_cannot_starve_another(shared, stats):
    async def scenario():
        async with Streams(shared, "canary") as streams:
            await streams.open(POOL + 5)  # more than the whole pool, all at once
            other = await ask(shared, "team")  # while they are all open
            return streams.with_status(200), streams.with_status(429), other

    served, refused, (other_rid, other) = asyncio.run(scenario())
    assert other.status_code == 200, other.text  # without shares: a 504 once the pool's wait ended
    assert shared.record(other_rid)["outcome"] == "ok"
    assert len(served) == SHARE and len(refused) == POOL + 5 - SHARE
    for rid, response in refused:
        assert response.headers["Retry-After"] == "1"
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
        record = shared.record(rid)
        assert (record["status"], record["outcome"], record["upstream_attempts"]) == (429, "refused", 0)
    assert stats()["attempts"]["fault/drip"] == SHARE  # the refused never reached the router
    for rid, _ in served:
        assert shared.record(rid)["outcome"] == "client_disconnected"

    async def again():  # every share was given back when its stream ended: the key has them all
        async with Streams(shared, "canary") as streams:
            await streams.open(SHARE)
            return streams.with_status(200)

    assert len(asyncio.run(again())) == SHARE


def test_a_full_pool_is_the_proxys_503_not_the_routers_timeout(unshared, stats):
    model = "slow/did-not-fit"

    async def scenario():
        async with Streams(unshared, "canary") as streams:
            await streams.open(POOL)  # the whole pool
            assert len(streams.with_status(200)) == POOL
            return await asyncio.gather(*(ask(unshared, "team", model) for _ in range(3)))

    for rid, response in asyncio.run(scenario()):
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"]
        error = response.json()["error"]
        assert (error["code"], error["type"]) == ("proxy_saturated", "server_error")
        assert "saturated" in error["message"]
        record = unshared.record(rid)
        assert (record["status"], record["outcome"], record["error_code"], record["upstream_attempts"]) == (
            503,
            "proxy_error",
            "proxy_saturated",
            0,
        )
    assert stats()["attempts"].get(model, 0) == 0  # the router never saw them
