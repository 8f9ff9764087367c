"""CORS for browser clients: the preflight admits every header the official SDKs send, and
JavaScript can read the proxy's own response headers (limits, retry advice, request id).
tests/browser/test_sdk_browser.py checks the same with openai-node in Chromium."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from accounts import services
from tests.support.answers import completion
from tests.support.clients import AsyncClient, bearer

ORIGIN = "https://app.example"
# What openai-node 7.59 sends (its client.mjs and lib/polling.mjs), as a browser lists them in
# Access-Control-Request-Headers, and one it may add later.
SDK_HEADERS = [
    "authorization",
    "content-type",
    "openai-organization",
    "openai-project",
    "x-stainless-arch",
    "x-stainless-custom-poll-interval",
    "x-stainless-helper-method",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-poll-helper",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
    "x-stainless-added-later",
]
# Response headers JavaScript can read without being told (the Fetch spec's safelist).
SAFELISTED = {
    "cache-control",
    "content-language",
    "content-length",
    "content-type",
    "expires",
    "last-modified",
    "pragma",
}


def browser_allows(response, header: str) -> bool:
    """The Fetch spec's preflight check for one request header: named, or covered by the "*"
    wildcard, which holds only without credentials and never for Authorization."""
    allowed = {name.strip().lower() for name in response["access-control-allow-headers"].split(",")}
    wildcard = "*" in allowed and "access-control-allow-credentials" not in response
    return header in allowed or (wildcard and header != "authorization")


async def preflight(client: AsyncClient):
    return await client.options(
        "/v1/chat/completions",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": ",".join(SDK_HEADERS),
        },
    )


def unreadable(response) -> set[str]:
    """The response's headers that JavaScript on another origin cannot read."""
    exposed = {name.strip().lower() for name in response["access-control-expose-headers"].split(",")}
    names = {name.lower() for name in response.headers}
    return {n for n in names - SAFELISTED - exposed if not n.startswith("access-control-") and n != "vary"}


async def test_the_preflight_admits_the_sdk_headers(anonymous_client):
    response = await preflight(anonymous_client)
    assert response.status_code == 200
    assert response["access-control-allow-origin"] == "*"
    assert [header for header in SDK_HEADERS if not browser_allows(response, header)] == []


async def test_the_preflight_admits_them_from_a_configured_origin(anonymous_client, settings):
    settings.CORS_ALLOW_ALL_ORIGINS = False
    settings.CORS_ALLOWED_ORIGINS = [ORIGIN]
    response = await preflight(anonymous_client)
    assert response["access-control-allow-origin"] == ORIGIN
    assert [header for header in SDK_HEADERS if not browser_allows(response, header)] == []


async def test_javascript_can_read_the_limit_headers(anonymous_client, user, hf):
    key = (await sync_to_async(services.api_key_create)(user=user, rpm=1, tpm=1000))[1]
    hf.post("/chat/completions").respond(200, json=completion())
    body = {"messages": [{"role": "user", "content": "Hi"}]}
    headers = {**bearer(key), "origin": ORIGIN}

    answered = await anonymous_client.post("/v1/chat/completions", body, "application/json", headers=headers)
    refused = await anonymous_client.post("/v1/chat/completions", body, "application/json", headers=headers)

    assert answered.status_code == 200
    assert all(answered.has_header(name) for name in ("x-request-id", "x-ratelimit-reset-tokens"))
    assert unreadable(answered) == set()
    assert refused.status_code == 429
    assert refused.has_header("retry-after")
    assert unreadable(refused) == set()


@pytest.mark.parametrize(("status", "advice"), [(402, "x-should-retry"), (503, "retry-after")])
async def test_javascript_can_read_the_retry_advice(async_client, hf, status, advice):
    """What openai-node reads to decide whether and when to retry."""
    hf.post("/chat/completions").respond(status, json={"error": "no"}, headers={"retry-after": "3"})
    response = await async_client.post(
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "Hi"}]},
        "application/json",
        headers={"origin": ORIGIN},
    )
    assert response.has_header(advice)
    assert unreadable(response) == set()
