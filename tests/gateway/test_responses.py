"""POST /v1/responses (and the stored-response endpoints) through the proxy, against respx: the
body forwarded as it came, typed events relayed as they came, one report with the response's
usage, failures in OpenAI's shape."""

import json

import pytest
from django.conf import settings

from accounts.models import Outcome, UsageSource
from gateway.responses import ResponsesStream, parse_request
from tests.support.answers import events_of, sse_response

URL = "/v1/responses"
USAGE = {
    "input_tokens": 120,
    "input_tokens_details": {"cached_tokens": 100},
    "output_tokens": 30,
    "output_tokens_details": {"reasoning_tokens": 12},
    "total_tokens": 150,
}


def response_object(text="Hello!", model="openai/gpt-oss-120b", usage=USAGE, status="completed"):
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1700000000,
        "status": status,
        "model": model,
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "usage": usage,
    }


def event(kind: str, sequence: int, **fields) -> bytes:
    data = {"type": kind, "sequence_number": sequence, **fields}
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def stream_events(words=("Hel", "lo"), terminal="response.completed", usage=USAGE) -> list[bytes]:
    started = response_object("", usage=None, status="in_progress")
    events = [
        event("response.created", 0, response=started),
        event("response.in_progress", 1, response=started),
    ]
    for word in words:
        events.append(event("response.output_text.delta", len(events), item_id="msg_1", delta=word))
    if terminal:
        finished = response_object("".join(words), usage=usage, status=terminal.split(".")[1])
        events.append(event(terminal, len(events), response=finished))
    return events


async def post(client, payload, **headers):
    return await client.post(
        URL, json.dumps(payload).encode(), content_type="application/json", headers=headers
    )


async def read(response) -> bytes:
    return b"".join([part async for part in response.streaming_content])


async def test_a_response_is_forwarded_as_it_came_and_its_usage_reported(async_client, hf, reports):
    route = hf.post("/responses").respond(200, json=response_object("Hi!"))
    payload = {
        "model": "openai/gpt-oss-120b:fireworks-ai",
        "input": [{"role": "user", "content": "Say hi"}],
        "reasoning": {"summary": "auto"},
        "previous_response_id": "resp_0",
        "a_field_from_the_future": {"x": 1},
    }
    raw = json.dumps(payload).encode()
    response = await async_client.post(URL, raw, content_type="application/json")
    assert response.status_code == 200
    assert response.json()["output"][0]["content"][0]["text"] == "Hi!"
    sent = route.calls.last.request
    assert sent.content == raw  # byte for byte: suffix, unknown fields, previous_response_id
    assert sent.headers["authorization"] == f"Bearer {settings.HF_TOKEN}"
    [report] = reports
    assert (report.endpoint, report.status, report.outcome, report.stream) == ("responses", 200, "ok", False)
    usage = report.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (120, 30, 150)
    assert (usage.cached_tokens, usage.reasoning_tokens) == (100, 12)
    assert report.usage_source == UsageSource.PROVIDER
    assert report.model_requested == "openai/gpt-oss-120b:fireworks-ai"


async def test_the_client_key_and_library_fields_never_go_upstream(async_client, api_key, hf):
    route = hf.post("/responses").respond(200, json=response_object())
    await post(async_client, {"model": "m/x", "input": "hi", "api_key": "sk-client"})
    sent = route.calls.last.request
    assert b"sk-client" not in sent.content and api_key.encode() not in sent.content
    assert api_key not in str(sent.headers)


async def test_a_stream_is_relayed_event_by_event_with_usage_from_response_completed(
    async_client, hf, reports
):
    events = stream_events()
    hf.post("/responses").mock(return_value=sse_response(events)[0])
    response = await post(async_client, {"model": "m/x", "input": "hi", "stream": True})
    assert response.status_code == 200 and response["content-type"] == "text/event-stream"
    body = await read(response)
    assert events_of(body) == [e.rstrip(b"\n") for e in events]  # as they came, no [DONE]
    [report] = reports
    assert (report.outcome, report.stream, report.model_answered) == (Outcome.OK, True, "openai/gpt-oss-120b")
    assert (report.usage.prompt_tokens, report.usage.cached_tokens, report.usage.reasoning_tokens) == (
        120,
        100,
        12,
    )
    assert report.usage_source == UsageSource.PROVIDER and report.first_token_at is not None


async def test_a_stream_cut_off_ends_with_an_error_event_and_an_estimate(async_client, hf, reports):
    events = stream_events(words=("a" * 40, "b" * 40), terminal=None)
    hf.post("/responses").mock(return_value=sse_response(events)[0])
    response = await post(async_client, {"model": "m/x", "input": "hi", "stream": True})
    last = events_of(await read(response))[-1]
    assert last.startswith(b"event: error\ndata: ")
    error = json.loads(last.split(b"data: ", 1)[1])
    assert error["type"] == "error" and error["code"] == "upstream_bad_response"
    assert error["sequence_number"] == len(events)  # follows the last event relayed
    [report] = reports
    assert report.outcome == Outcome.UPSTREAM_ERROR and report.usage_source == UsageSource.ESTIMATED
    assert report.usage.completion_tokens == 20  # 80 characters generated


async def test_a_failed_response_is_relayed_and_recorded_as_the_provider_failing(async_client, hf, reports):
    events = stream_events(terminal=None)
    failed = response_object(status="failed", usage=None)
    failed["error"] = {"code": "server_error", "message": "the provider failed"}
    events.append(event("response.failed", len(events), response=failed))
    hf.post("/responses").mock(return_value=sse_response(events)[0])
    response = await post(async_client, {"model": "m/x", "input": "hi", "stream": True})
    assert events_of(await read(response))[-1].startswith(b"event: response.failed")
    [report] = reports
    assert (report.outcome, report.error_code) == (Outcome.UPSTREAM_ERROR, "server_error")


async def test_router_errors_keep_openai_s_shape(async_client, hf, reports):
    hf.post("/responses").respond(
        400,
        json={
            "error": {
                "message": "model `m/x` is not supported",
                "type": "invalid_request_error",
                "param": "model",
            }
        },
    )
    response = await post(async_client, {"model": "m/x", "input": "hi", "stream": True})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "model `m/x` is not supported"
    assert response.json()["error"]["param"] == "model"
    [report] = reports
    assert (report.status, report.outcome) == (400, Outcome.UPSTREAM_ERROR)


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"model": 3, "input": "x"}, "model"),
        ({"input": 3}, "input"),
        ({"input": "x", "stream": "yes"}, "stream"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(async_client, hf, payload, param):
    response = await post(async_client, payload)
    assert response.status_code == 400 and response.json()["error"]["param"] == param
    assert not hf.calls


@pytest.fixture
def narrow_key(user) -> str:
    from accounts import services

    return services.api_key_create(user=user, name="narrow", allowed_models="org/only")[1]


async def test_a_model_the_key_may_not_use_is_refused(anonymous_client, narrow_key, hf):
    key = narrow_key
    response = await anonymous_client.post(
        URL,
        b'{"model": "org/other", "input": "x"}',
        content_type="application/json",
        headers={"authorization": f"Bearer {key}"},
    )
    assert response.status_code == 403 and response.json()["error"]["code"] == "model_not_allowed"


async def test_stored_responses_are_forwarded_and_a_router_without_them_is_a_clear_404(
    async_client, hf, reports
):
    hf.get("/responses/resp_1").respond(200, json=response_object())
    hf.delete("/responses/resp_1").respond(200, json={"id": "resp_1", "object": "response", "deleted": True})
    hf.get("/responses/resp_1/input_items").respond(200, json={"object": "list", "data": []})
    hf.post("/responses/resp_gone/cancel").respond(404, json={"error": "Not Found"})
    assert (await async_client.get(f"{URL}/resp_1")).json()["id"] == "resp_1"
    assert (await async_client.delete(f"{URL}/resp_1")).json()["deleted"] is True
    items = await async_client.get(f"{URL}/resp_1/input_items?limit=5&order=asc")
    assert items.status_code == 200
    assert hf.calls.last.request.url.params["limit"] == "5"
    gone = await async_client.post(f"{URL}/resp_gone/cancel")
    assert gone.status_code == 404
    assert (
        gone.json()["error"]["code"] == "response_not_found"
        and "resp_gone" in gone.json()["error"]["message"]
    )
    assert [r.endpoint for r in reports] == [
        "response_detail",
        "response_detail",
        "response_input_items",
        "response_cancel",
    ]
    # An id that is not one cannot reach another router path.
    assert (await async_client.get(f"{URL}/..%2Fchat")).status_code == 404


def test_the_follower_keeps_the_last_usage_and_counts_deltas():
    stream = ResponsesStream()
    out = b"".join(stream.feed(e) for e in stream_events(words=("ab", "cd")))
    assert stream.done and stream.started and stream.completion_chars == 4
    assert (stream.usage.prompt_tokens, stream.usage.cached_tokens) == (120, 100)
    assert out.count(b"event: ") == 5
    # An event split anywhere, and a last event without its blank line.
    split = ResponsesStream()
    raw = b"".join(stream_events())[:-2]
    for i in range(0, len(raw), 7):
        split.feed(raw[i : i + 7])
    assert not split.done
    split.end()
    assert split.done and split.usage.total_tokens == 150


def test_the_estimate_counts_instructions_items_and_tools():
    small = parse_request(b'{"input": "hi"}', "m").prompt_tokens
    bigger = parse_request(
        json.dumps(
            {
                "instructions": "x" * 400,
                "input": [{"role": "user", "content": [{"type": "input_text", "text": "y" * 400}]}],
                "tools": [{"type": "function", "name": "shell", "parameters": {}}],
            }
        ).encode(),
        "m",
    ).prompt_tokens
    assert small < 20 and bigger > small + 200


async def test_an_unknown_router_stream_event_passes_on(async_client, hf, reports):
    events = stream_events()
    events.insert(2, event("response.some_future_event", 99, anything=True))
    hf.post("/responses").mock(return_value=sse_response(events)[0])
    response = await post(async_client, {"model": "m/x", "input": "hi", "stream": True})
    assert b"response.some_future_event" in await read(response)
    assert reports[0].outcome == Outcome.OK


async def test_a_failed_response_not_streamed_is_the_provider_s_failure_too(async_client, hf, reports):
    failed = response_object(status="failed", usage=None)
    failed["error"] = {"code": "server_error", "message": "the provider failed"}
    hf.post("/responses").respond(200, json=failed)
    response = await post(async_client, {"model": "m/x", "input": "hi"})
    assert response.status_code == 200 and response.json()["status"] == "failed"  # relayed as it came
    [report] = reports
    assert (report.outcome, report.error_code) == (Outcome.UPSTREAM_ERROR, "server_error")


async def test_a_router_error_event_keeps_its_code(async_client, hf, reports):
    events = stream_events(terminal=None)
    events.append(event("error", len(events), code="rate_limit_exceeded", message="slow down", param=None))
    hf.post("/responses").mock(return_value=sse_response(events)[0])
    response = await post(async_client, {"model": "m/x", "input": "hi", "stream": True})
    last = json.loads(events_of(await read(response))[-1].split(b"data: ", 1)[1])
    assert (last["type"], last["code"]) == ("error", "rate_limit_exceeded")
    assert reports[0].error_code == "rate_limit_exceeded"


async def test_only_the_api_s_own_query_parameters_go_upstream(async_client, hf):
    hf.get("/responses/resp_1/input_items").respond(200, json={"object": "list", "data": []})
    await async_client.get(f"{URL}/resp_1/input_items?limit=2&order=desc&token=x&include=a&include=b")
    sent = hf.calls.last.request.url
    assert sorted(sent.params.multi_items()) == [
        ("include", "a"),
        ("include", "b"),
        ("limit", "2"),
        ("order", "desc"),
    ]
