"""gateway.share: each key's share of a worker, taken on admission and given back however the
request ends."""

import asyncio
import json

import httpx
import pytest

from accounts import runtime, services
from accounts.limits import Refusal
from accounts.models import Outcome
from gateway import share
from tests.support.answers import chunk, completion, sse_response, standard_stream
from tests.support.asgi import asgi_request
from tests.support.clients import AsyncClient, bearer

URL = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def limit(settings):
    settings.KEY_MAX_IN_FLIGHT = 2
    return 2


def test_it_counts_each_key_on_its_own(limit):
    assert share.take(1) and share.take(1)
    with pytest.raises(Refusal) as refused:
        share.take(1)
    assert (refused.value.kind, refused.value.retry_after) == ("share", 1)
    assert share.take(2)  # another key is not held up
    share.give_back(1)
    assert share.take(1)
    for key in (1, 1, 2):
        share.give_back(key)
    assert share._in_flight == {}  # an idle key takes no memory


def test_it_is_off_at_zero(settings):
    settings.KEY_MAX_IN_FLIGHT = 0
    assert not any(share.take(1) for _ in range(1000))
    assert share._in_flight == {}


async def post(client, payload, path=URL, **headers):
    return await client.post(
        path, json.dumps(payload).encode(), content_type="application/json", headers=headers
    )


async def drain(response) -> bytes:
    return b"".join([part async for part in response.streaming_content])


@pytest.fixture
def other_client(user) -> AsyncClient:
    """Another key's client."""
    return AsyncClient(authorization=f"Bearer {services.api_key_create(user=user, name='other')[1]}")


async def test_a_key_over_its_share_gets_a_429_and_others_do_not(
    async_client, other_client, hf, reports, limit
):
    hf.post("/chat/completions").mock(side_effect=lambda request: sse_response(standard_stream())[0])
    held = [await post(async_client, {"messages": MESSAGES, "stream": True}) for _ in range(limit)]
    refused = await post(async_client, {"messages": MESSAGES, "stream": True})
    assert refused.status_code == 429
    assert refused["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "in flight" in refused.json()["error"]["message"]
    served = await post(other_client, {"messages": MESSAGES, "stream": True})
    assert served.status_code == 200 and b"[DONE]" in await drain(served)
    for response in held:
        await drain(response)
    again = await post(async_client, {"messages": MESSAGES, "stream": True})  # given back
    assert again.status_code == 200 and b"[DONE]" in await drain(again)
    assert [(r.status, r.refused_by) for r in reports if r.status == 429] == [(429, "share")]
    assert share._in_flight == {}


async def test_the_refusal_speaks_anthropic_on_messages(async_client, hf, settings):
    settings.KEY_MAX_IN_FLIGHT = 1
    share.take(await _key_id())
    response = await post(
        async_client, {"model": "m/x", "max_tokens": 8, "messages": MESSAGES}, "/v1/messages"
    )
    assert response.status_code == 429 and response["Retry-After"] == "1"
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "rate_limit_error"


async def _key_id() -> int:
    from accounts.models import ApiKey

    return (await ApiKey.objects.aget(name="test key")).pk


def _hang(request):
    return asyncio.sleep(30)


# How a request can end, each with the router's answer that leads there.
ENDINGS = {
    "ok": lambda hf: hf.post("/chat/completions").respond(200, json=completion()),
    "stream": lambda hf: hf.post("/chat/completions").mock(return_value=sse_response(standard_stream())[0]),
    "router_error": lambda hf: hf.post("/chat/completions").respond(400, json={"error": "no"}),
    "unreachable": lambda hf: hf.post("/chat/completions").mock(side_effect=httpx.ConnectError("refused")),
    "timeout": lambda hf: hf.post("/chat/completions").mock(side_effect=_hang),
    "stream_cut": lambda hf: hf.post("/chat/completions").mock(
        return_value=sse_response([chunk("a")], hang_after=True)[0]
    ),
}


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("stream", [False, True])
async def test_every_ending_gives_the_share_back(async_client, hf, settings, limit, ending, stream):
    settings.READ_TIMEOUT, settings.REQUEST_TIMEOUT = 0.2, 0.5
    ENDINGS[ending](hf)
    response = await post(async_client, {"messages": MESSAGES, "stream": stream})
    if response.streaming:
        await drain(response)
    assert share._in_flight == {}


async def test_a_bad_request_and_a_refusal_give_the_share_back(async_client, hf, limit):
    assert (await post(async_client, {"messages": "not a list"})).status_code == 400
    assert share._in_flight == {}


@pytest.mark.parametrize(
    "leaving",
    [{"disconnect_after_chunks": 2}, {"disconnect_on_start": True}, {"disconnect_after_seconds": 0.2}],
)
async def test_a_client_leaving_gives_the_share_back(hf, api_key, limit, leaving):
    answer, _ = sse_response([chunk(f"w{i}") for i in range(50)], delay=0.02)
    hf.post("/chat/completions").mock(return_value=answer)
    body = json.dumps({"messages": MESSAGES, "stream": True}).encode()
    await asgi_request("POST", URL, body, headers=bearer(api_key), **leaving)
    await runtime.background()  # a stream's cleanup, when the client left as headers went out
    assert share._in_flight == {}


async def test_a_request_the_limits_refuse_gives_the_share_back(
    hf, limit, reports, monkeypatch, async_client
):
    async def over(*args, **options):
        raise Refusal("requests", "Rate limit reached.", 3, {})

    monkeypatch.setattr("accounts.limits.admit", over)
    response = await post(async_client, {"messages": MESSAGES})
    assert response.status_code == 429 and response["Retry-After"] == "3"
    assert [(r.outcome, r.refused_by) for r in reports] == [(Outcome.REFUSED, "requests")]
    assert share._in_flight == {}
