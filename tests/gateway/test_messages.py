"""POST /v1/messages (Anthropic's Messages API) and count_tokens through the proxy, against respx:
the hfproxy key accepted where Anthropic's clients send theirs, Anthropic's headers forwarded and
the key never, events relayed as they came, usage from message_start and message_delta, errors
in Anthropic's shape."""

import json

import pytest
from django.conf import settings

from accounts.models import Outcome, UsageSource
from gateway import errors
from gateway.messages import MessagesStream, parse_request, usage_of
from tests.support.answers import events_of, sse_response

URL = "/v1/messages"
START_USAGE = {
    "input_tokens": 20,
    "cache_read_input_tokens": 100,
    "cache_creation_input_tokens": 5,
    "output_tokens": 1,
}
PAYLOAD = {"model": "m/x", "max_tokens": 64, "messages": [{"role": "user", "content": "Say hi"}]}


def message(text="Hello!", model="m/x", usage=None):
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage or {**START_USAGE, "output_tokens": 7},
    }


def event(kind: str, **fields) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()


def stream_events(words=("Hel", "lo"), output_tokens=9, stop=True) -> list[bytes]:
    start = {**message(""), "content": [], "stop_reason": None, "usage": START_USAGE}
    events = [
        event("message_start", message=start),
        event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        event("ping"),
    ]
    events += [event("content_block_delta", index=0, delta={"type": "text_delta", "text": w}) for w in words]
    if stop:
        events += [
            event("content_block_stop", index=0),
            event(
                "message_delta",
                delta={"stop_reason": "end_turn", "stop_sequence": None},
                usage={"output_tokens": output_tokens},
            ),
            event("message_stop"),
        ]
    return events


def anthropic_headers(key: str, *, header: str = "x-api-key") -> dict[str, str]:
    credentials = key if header == "x-api-key" else f"Bearer {key}"
    return {
        header: credentials,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
    }


async def post(client, key, payload=PAYLOAD, path=URL, **options):
    return await client.post(
        path,
        json.dumps(payload).encode(),
        content_type="application/json",
        headers=anthropic_headers(key, **options),
    )


async def read(response) -> bytes:
    return b"".join([part async for part in response.streaming_content])


@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
async def test_a_message_is_forwarded_with_anthropic_s_headers_and_never_the_key(
    anonymous_client, api_key, hf, reports, header
):
    route = hf.post("/messages").respond(200, json=message("Hi!"))
    response = await post(anonymous_client, api_key, path=URL + "?beta=true", header=header)
    assert response.status_code == 200 and response.json()["content"][0]["text"] == "Hi!"
    sent = route.calls.last.request
    assert sent.url.query == b"beta=true"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["anthropic-beta"] == "claude-code-20250219,interleaved-thinking-2025-05-14"
    assert sent.headers["authorization"] == f"Bearer {settings.HF_TOKEN}"
    assert "x-api-key" not in sent.headers and api_key not in str(sent.headers)
    assert json.loads(sent.content) == PAYLOAD
    [report] = reports
    assert (report.endpoint, report.outcome, report.usage_source) == (
        "messages",
        Outcome.OK,
        UsageSource.PROVIDER,
    )
    # Anthropic counts input in three parts; the prompt is their sum, cached the cache reads.
    usage = report.usage
    assert (usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens, usage.total_tokens) == (
        125,
        100,
        7,
        132,
    )


async def test_a_stream_is_relayed_as_it_came_with_usage_from_both_ends(
    anonymous_client, api_key, hf, reports
):
    events = stream_events(output_tokens=9)
    hf.post("/messages").mock(return_value=sse_response(events)[0])
    response = await post(anonymous_client, api_key, {**PAYLOAD, "stream": True})
    assert response.status_code == 200 and response["content-type"] == "text/event-stream"
    assert events_of(await read(response)) == [e.rstrip(b"\n") for e in events]
    [report] = reports
    assert (report.outcome, report.stream, report.model_answered) == (Outcome.OK, True, "m/x")
    assert (report.usage.prompt_tokens, report.usage.completion_tokens, report.usage.cached_tokens) == (
        125,
        9,
        100,
    )


async def test_a_stream_cut_off_ends_with_an_anthropic_error_event(anonymous_client, api_key, hf, reports):
    hf.post("/messages").mock(return_value=sse_response(stream_events(words=("a" * 400,), stop=False))[0])
    response = await post(anonymous_client, api_key, {**PAYLOAD, "stream": True})
    last = events_of(await read(response))[-1]
    assert last.startswith(b"event: error\ndata: ")
    error = json.loads(last.split(b"data: ", 1)[1])
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    [report] = reports
    assert report.outcome == Outcome.UPSTREAM_ERROR
    # Estimated, from the provider's input count (message_start) and the 400 characters generated.
    assert report.usage_source == UsageSource.ESTIMATED
    assert (report.usage.prompt_tokens, report.usage.completion_tokens) == (125, 100)


@pytest.mark.parametrize(
    ("router_status", "status", "kind"),
    [
        (400, 400, "invalid_request_error"),
        (429, 429, "rate_limit_error"),
        (529, 529, "overloaded_error"),
        (500, 502, "api_error"),
    ],
)
async def test_errors_are_in_anthropic_s_shape(anonymous_client, api_key, hf, router_status, status, kind):
    hf.post("/messages").respond(
        router_status, json={"type": "error", "error": {"type": "x", "message": "no"}}
    )
    response = await post(anonymous_client, api_key)
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind and "no" in body["error"]["message"]


async def test_a_bad_key_and_a_bad_body_are_anthropic_errors_too(anonymous_client, api_key, hf):
    response = await post(anonymous_client, "hfp_not-a-key-at-all-000000")
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
    response = await post(anonymous_client, api_key, {"model": "m/x", "messages": "hi"})
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "`messages` must be an array of message objects.",
        },
    }
    assert not hf.calls


async def test_count_tokens_is_forwarded_where_the_router_serves_it(anonymous_client, api_key, hf, reports):
    route = hf.post("/messages/count_tokens").respond(200, json={"input_tokens": 42})
    response = await post(anonymous_client, api_key, path=URL + "/count_tokens")
    assert response.json() == {"input_tokens": 42} and "x-hfproxy-estimate" not in response
    assert route.calls.last.request.headers["anthropic-version"] == "2023-06-01"
    [report] = reports
    assert report.endpoint == "count_tokens" and report.usage is None  # counting uses no tokens


async def test_count_tokens_is_estimated_and_says_so_where_the_router_has_none(anonymous_client, api_key, hf):
    hf.post("/messages/count_tokens").respond(404, json={"error": "Not Found"})
    small = await post(anonymous_client, api_key, path=URL + "/count_tokens")
    payload = {**PAYLOAD, "system": "s" * 4000}
    big = await post(anonymous_client, api_key, payload, path=URL + "/count_tokens")
    assert small.status_code == big.status_code == 200
    assert small["x-hfproxy-estimate"] == "true"
    assert big.json()["input_tokens"] >= small.json()["input_tokens"] + 1000


async def test_the_model_list_speaks_anthropic_to_anthropic_clients(anonymous_client, api_key, hf):
    hf.get("/models").respond(200, json={"object": "list", "data": [{"id": "org/a", "created": 1700000000}]})
    openai = await anonymous_client.get("/v1/models", headers={"authorization": f"Bearer {api_key}"})
    assert openai.json()["data"][0]["object"] == "model"
    anthropic = await anonymous_client.get("/v1/models", headers=anthropic_headers(api_key))
    assert anthropic.json() == {
        "data": [
            {"type": "model", "id": "org/a", "display_name": "org/a", "created_at": "2023-11-14T22:13:20Z"}
        ],
        "has_more": False,
        "first_id": "org/a",
        "last_id": "org/a",
    }
    one = await anonymous_client.get("/v1/models/org/a", headers=anthropic_headers(api_key))
    assert one.json()["type"] == "model"
    missing = await anonymous_client.get("/v1/models/org/b", headers=anthropic_headers(api_key))
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"


def test_usage_keeps_the_latest_of_each_count():
    assert usage_of({"input_tokens": 3, "output_tokens": 1}, {"output_tokens": 50}).completion_tokens == 50
    assert usage_of({"output_tokens": 5}).prompt_tokens is None
    assert usage_of(None) is None
    stream = MessagesStream()
    for e in stream_events(words=("abc", "de")):
        stream.feed(e)
    assert stream.done and stream.completion_chars == 5 and stream.usage.completion_tokens == 9


def test_the_estimate_counts_system_blocks_tool_results_and_tools():
    base = parse_request(json.dumps(PAYLOAD).encode(), "d").prompt_tokens
    rich = {
        **PAYLOAD,
        "system": [{"type": "text", "text": "x" * 400, "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "Bash", "input": {"command": "y" * 400}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [{"type": "text", "text": "z" * 400}],
                    }
                ],
            },
        ],
        "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
    }
    assert parse_request(json.dumps(rich).encode(), "d").prompt_tokens > base + 300


async def test_the_router_s_own_error_type_survives_a_stream(anonymous_client, api_key, hf, reports):
    events = stream_events(stop=False)
    events.append(event("error", error={"type": "overloaded_error", "message": "Overloaded"}))
    hf.post("/messages").mock(return_value=sse_response(events)[0])
    response = await post(anonymous_client, api_key, {**PAYLOAD, "stream": True})
    last = json.loads(events_of(await read(response))[-1].split(b"data: ", 1)[1])
    assert last["error"] == {"type": "overloaded_error", "message": "The provider is overloaded: Overloaded"}
    assert reports[0].error_code == "upstream_overloaded"


async def test_an_overloaded_first_event_is_a_529_before_the_headers(anonymous_client, api_key, hf):
    body = event("error", error={"type": "overloaded_error", "message": "Overloaded"})
    hf.post("/messages").mock(return_value=sse_response([body])[0])
    response = await post(anonymous_client, api_key, {**PAYLOAD, "stream": True})
    assert response.status_code == 529 and response.json()["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize("path", ["/v1/messages/batches", "/v1/messages/count_tokens/x"])
async def test_unknown_paths_under_messages_are_anthropic_404s(anonymous_client, path):
    response = await anonymous_client.post(path)
    assert response.status_code == 404
    assert response.json()["type"] == "error" and response.json()["error"]["type"] == "not_found_error"


def test_a_spent_budget_is_a_billing_error_to_anthropic_clients():
    budget = errors.ApiError(429, "out of budget", type="insufficient_quota", code="insufficient_quota")
    assert budget.anthropic_body()["error"]["type"] == "billing_error"
    rate = errors.ApiError(429, "slow down", type="rate_limit_exceeded", code="rate_limit_exceeded")
    assert rate.anthropic_body()["error"]["type"] == "rate_limit_error"


async def test_a_message_start_without_usage_leaves_message_delta_s_counts(
    anonymous_client, api_key, hf, reports
):
    events = stream_events()
    start = json.loads(events[0].split(b"data: ", 1)[1])
    del start["message"]["usage"]
    events[0] = event("message_start", message=start["message"])
    events[-2] = event(
        "message_delta", delta={"stop_reason": "end_turn"}, usage={**START_USAGE, "output_tokens": 9}
    )
    hf.post("/messages").mock(return_value=sse_response(events)[0])
    await read(await post(anonymous_client, api_key, {**PAYLOAD, "stream": True}))
    [report] = reports
    assert report.usage_source == UsageSource.PROVIDER
    assert (report.usage.prompt_tokens, report.usage.completion_tokens) == (125, 9)


async def test_count_tokens_for_a_model_the_router_does_not_know_is_its_error(anonymous_client, api_key, hf):
    hf.post("/messages/count_tokens").respond(
        404, json={"type": "error", "error": {"type": "not_found_error", "message": "model: m/x not found"}}
    )
    response = await post(anonymous_client, api_key, path=URL + "/count_tokens")
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"


async def test_only_beta_goes_upstream_in_the_query(anonymous_client, api_key, hf):
    route = hf.post("/messages").respond(200, json=message())
    await post(anonymous_client, api_key, path=URL + "?beta=true&api_key=sk-x")
    assert route.calls.last.request.url.query == b"beta=true"
