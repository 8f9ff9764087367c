"""Shared fixtures: state reset between tests, a database the usage writer can use, a user and
their key, clients, a respx router standing in for Hugging Face, captured reports. Plain helpers
(router answers, the raw ASGI driver, factories) live in tests/support."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import respx
from django.conf import settings
from django.contrib.auth import get_user_model

from accounts import runtime, services
from gateway import exchange, upstream
from tests.support.clients import AsyncClient


@pytest.fixture(autouse=True)
def _reset():
    """Cached lookups, limit counters, an injected transport: nothing leaks from one test into
    the next (`runtime.reset()` walks every module's state)."""
    runtime.reset()
    yield
    runtime.reset()


@pytest.fixture
async def usage_db(transactional_db):
    """A database the usage writer can write to; queued records are written (or the test
    fails) before the database is emptied."""
    yield
    await asyncio.sleep(0.02)  # let cleanups scheduled by closed responses start
    # What the server's shutdown does: background work ends, the records are written.
    assert await runtime.stop(10), "usage records were left unwritten"


@pytest.fixture
def user(usage_db):
    return get_user_model().objects.create_user("alice", password="alice-password-123")


@pytest.fixture
def api_key(user) -> str:
    """A valid key of `user` (alice), calling upstream with HF_TOKEN."""
    return services.api_key_create(user=user, name="test key")[1]


@pytest.fixture
def async_client(api_key) -> AsyncClient:
    """Django's async test client, authenticated with `api_key`."""
    # ASGI header names as defaults: AsyncClient(headers=…) turns them into WSGI names.
    return AsyncClient(authorization=f"Bearer {api_key}")


@pytest.fixture
def anonymous_client() -> AsyncClient:
    return AsyncClient()


@pytest.fixture
async def hf():
    """The Hugging Face router, mocked: respx's router injected as the upstream transport."""
    router = respx.MockRouter(base_url=settings.HF_BASE_URL, assert_all_called=False)
    upstream.set_transport(httpx.MockTransport(router.async_handler))
    yield router
    await upstream.aclose()  # the transport goes back with the next `runtime.reset()`


@pytest.fixture
def reports(monkeypatch):
    """Every report made while the test runs, in order."""
    made: list[exchange.Exchange] = []
    original = exchange.report

    def capture(exchange):
        made.append(exchange)
        original(exchange)

    monkeypatch.setattr(exchange, "report", capture)
    return made
