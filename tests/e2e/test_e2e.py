"""End to end: uvicorn serving hfproxy in front of the fake router, driven by real clients."""

from __future__ import annotations

import contextlib
import json
import signal
import time

import httpx
import openai
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import BadRequestError

from tests.support.processes import free_port, manage, proxy_env, scratch_database, server_env, start, stop

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "Say hello 👋 你好"}]
# A model the fake router serves, OpenAI-style (its streams end with [DONE]).
MODEL = "openai/gpt-oss-120b:fireworks-ai"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    with contextlib.ExitStack() as stack:
        yield from _servers(stack, tmp_path_factory)


def _servers(stack, tmp_path_factory):
    router_port, proxy_port = free_port(), free_port()
    router = start(
        ["-m", "tests.support.fake_router", "--port", str(router_port)],
        server_env(FAKE_ROUTER_DRIP="0.2"),
        f"http://127.0.0.1:{router_port}/_stats",
    )
    database = stack.enter_context(scratch_database(tmp_path_factory.mktemp("db")))
    env = proxy_env(
        f"http://127.0.0.1:{router_port}",
        database,
        HF_TOKEN="hf_e2e_token_value",
        MAX_REQUEST_BYTES="100000",
        READ_TIMEOUT="2",
        AUTH_CACHE_TTL="1",
        USAGE_FLUSH_INTERVAL="0.1",
    )
    manage("migrate", "--verbosity", "0", env=env)
    key = manage("create_api_key", "e2e-user", env=env).splitlines()[-1]
    try:
        proxy = start(
            ["-m", "uvicorn", "hfproxy_site.asgi:application", "--port", str(proxy_port), "--lifespan", "on"],
            env,
            f"http://127.0.0.1:{proxy_port}/",
        )
        try:
            yield {
                "router": f"http://127.0.0.1:{router_port}",
                "proxy": f"http://127.0.0.1:{proxy_port}",
                "key": key,
                "env": env,
            }
        finally:
            stop(proxy)
    finally:
        stop(router)


def auth(servers) -> dict[str, str]:
    return {"Authorization": f"Bearer {servers['key']}"}


@pytest.fixture
def router_stats(servers):
    httpx.post(servers["router"] + "/_reset")

    def read():
        return httpx.get(servers["router"] + "/_stats").json()

    return read


@pytest.fixture
def client(servers):
    return openai.OpenAI(base_url=servers["proxy"] + "/v1", api_key=servers["key"], max_retries=0)


def test_openai_sdk_non_streaming(client, router_stats):
    answer = client.chat.completions.create(model="openai/gpt-oss-120b:fireworks-ai", messages=MESSAGES)
    assert answer.choices[0].message.content.startswith("tok0 tok1")
    assert answer.usage.completion_tokens == 20
    stats = router_stats()
    assert stats["last_headers"]["authorization"] == "Bearer hf_e2e_token_value"
    assert json.loads(stats["last_body"])["messages"] == MESSAGES  # Unicode intact


def test_openai_sdk_streaming_without_and_with_usage(client):
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("tok0 tok1")
    assert all(c.usage is None for c in chunks)

    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage.completion_tokens == 20


def test_huggingface_hub_inference_client(servers):
    hub = InferenceClient(base_url=servers["proxy"] + "/v1", api_key=servers["key"])
    answer = hub.chat_completion(messages=MESSAGES, model="openai/gpt-oss-120b", max_tokens=50)
    assert answer.choices[0].message.content.startswith("tok0")
    text = "".join(
        c.choices[0].delta.content or ""
        for c in hub.chat_completion(messages=MESSAGES, model=MODEL, stream=True)
        if c.choices
    )
    assert text.startswith("tok0 tok1")


def test_huggingface_hub_without_a_model_is_refused_as_the_router_refuses_it(servers, router_stats):
    # Given only a base URL, InferenceClient sends the model "dummy", which hfproxy forwards
    # and the router does not know: the README's example must name its model.
    hub = InferenceClient(base_url=servers["proxy"] + "/v1", api_key=servers["key"])
    with pytest.raises(BadRequestError, match="does not exist"):
        hub.chat_completion(messages=MESSAGES)
    assert router_stats()["refused"] == {"dummy": 1}


def test_router_errors_reach_the_sdk_as_openai_errors(client):
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="fault/status-429", messages=MESSAGES)
    assert caught.value.response.headers["retry-after"] == "7"
    # A 503 that says when to come back stays a 503 (not retried by the proxy; the SDK may).
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="fault/status-503", messages=MESSAGES)
    assert caught.value.status_code == 503 and caught.value.response.headers["retry-after"] == "7"
    # A 500 the proxy already retried is a 502 the SDK is told not to retry.
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="fault/status-500", messages=MESSAGES)
    assert caught.value.status_code == 502 and caught.value.response.headers["x-should-retry"] == "false"
    # A model the router does not serve: its 400, with its code.
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="nobody/nothing", messages=MESSAGES)
    assert caught.value.code == "model_not_supported"


def test_a_cut_stream_raises_in_the_sdk(client):
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="fault/cut", messages=MESSAGES, stream=True))


def test_a_router_that_hangs_is_a_504(client):
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="fault/hang", messages=MESSAGES)
    assert caught.value.status_code == 504


def test_every_response_has_a_request_id(servers):
    response = httpx.get(
        servers["proxy"] + "/v1/models", headers={**auth(servers), "x-request-id": "trace-7"}
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "trace-7"
    assert httpx.get(servers["proxy"] + "/health").headers["x-request-id"]


def usage_rows(servers, expected: int) -> list[dict]:
    """The server's usage report (JSON), once it holds `expected` requests in all."""
    deadline = time.monotonic() + 10
    while True:
        rows = json.loads(manage("usage_report", "--format", "json", env=servers["env"]))
        if sum(row["requests"] for row in rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_each_user_calls_with_their_own_token_and_every_request_is_recorded(servers, router_stats):
    env = servers["env"]
    before = sum(row["requests"] for row in json.loads(manage("usage_report", "--format", "json", env=env)))
    kim = manage("create_api_key", "kim", "--hf-token", "hf_kims_own_token", env=env).splitlines()[-1]
    lee = manage("create_api_key", "lee", env=env).splitlines()[-1]
    proxy = servers["proxy"] + "/v1"

    kim_client = openai.OpenAI(base_url=proxy, api_key=kim, max_retries=0)
    kim_client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert router_stats()["last_headers"]["authorization"] == "Bearer hf_kims_own_token"
    lee_client = openai.OpenAI(base_url=proxy, api_key=lee, max_retries=0)
    list(lee_client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert router_stats()["last_headers"]["authorization"] == "Bearer hf_e2e_token_value"

    manage("revoke_api_key", lee[:12], env=env)
    time.sleep(float(env.get("AUTH_CACHE_TTL", "5")) + 0.2)
    with pytest.raises(openai.AuthenticationError):
        lee_client.chat.completions.create(model=MODEL, messages=MESSAGES)

    rows = {row["user"]: row for row in usage_rows(servers, before + 2)}
    assert rows["kim"]["requests"] == 1 and rows["kim"]["total_tokens"] > 20
    assert rows["lee"]["requests"] == 1 and rows["lee"]["completion_tokens"] == 20


def test_concurrent_streams_and_a_disconnect_each_leave_one_record(servers):
    import asyncio

    env = servers["env"]
    key = manage("create_api_key", "mo", env=env).splitlines()[-1]
    client = openai.AsyncOpenAI(base_url=servers["proxy"] + "/v1", api_key=key, max_retries=0)

    async def one_stream():
        stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        return [chunk async for chunk in stream]

    async def main():
        await asyncio.gather(*(one_stream() for _ in range(50)))
        await client.close()

    asyncio.run(main())
    body = {"model": "fault/drip", "messages": MESSAGES, "stream": True}
    with httpx.stream(
        "POST",
        servers["proxy"] + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
    ) as response:
        next(response.iter_lines())
    rows = usage_rows(servers, 0)
    deadline = time.monotonic() + 10
    while sum(r["requests"] for r in rows if r["user"] == "mo") < 51 and time.monotonic() < deadline:
        time.sleep(0.2)
        rows = usage_rows(servers, 0)
    mine = {row["model"]: row for row in rows if row["user"] == "mo"}
    assert mine[MODEL]["requests"] == 50 and mine[MODEL]["errors"] == 0
    assert mine["fault/drip"]["requests"] == 1 and mine["fault/drip"]["errors"] == 1


def test_a_clean_shutdown_writes_every_queued_record(servers):
    env = {**servers["env"], "USAGE_FLUSH_INTERVAL": "3600"}  # nothing is written before shutdown
    key = manage("create_api_key", "nia", env=env).splitlines()[-1]
    port = free_port()
    proxy = start(
        ["-m", "uvicorn", "hfproxy_site.asgi:application", "--port", str(port), "--lifespan", "on"],
        env,
        f"http://127.0.0.1:{port}/",
    )
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        for _ in range(3):
            client.chat.completions.create(model=MODEL, messages=MESSAGES)
        list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
        assert not [
            row
            for row in json.loads(manage("usage_report", "--format", "json", env=env))
            if row["user"] == "nia"
        ]
    finally:
        proxy.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down cleanly.
        assert proxy.wait(15) in (0, -signal.SIGTERM)
    [row] = [
        row for row in json.loads(manage("usage_report", "--format", "json", env=env)) if row["user"] == "nia"
    ]
    assert row["requests"] == 4
