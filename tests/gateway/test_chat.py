import asyncio
import json

import httpx
import pytest
from django.conf import settings

from accounts.models import Outcome
from tests.support.answers import chunk, completion, events_of, sse_response, standard_stream
from tests.support.asgi import asgi_request
from tests.support.clients import bearer

URL = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Say hello"}]


async def post(client, payload, **headers):
    return await client.post(
        URL, json.dumps(payload).encode(), content_type="application/json", headers=headers
    )


async def read_stream(response) -> bytes:
    return b"".join([part async for part in response.streaming_content])


async def test_it_relays_a_completion(async_client, hf, reports):
    route = hf.post("/chat/completions").respond(200, json=completion("Hi!"))
    response = await post(
        async_client, {"model": "org/m:fastest", "messages": MESSAGES}, x_request_id="req-42"
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Hi!"
    assert response["x-request-id"] == "req-42"
    sent = route.calls.last.request
    assert json.loads(sent.content)["model"] == "org/m:fastest"
    assert sent.headers["authorization"] == f"Bearer {settings.HF_TOKEN}"
    assert sent.headers["x-request-id"] == "req-42"
    [report] = reports
    assert (report.status, report.outcome, report.stream) == (200, Outcome.OK, False)
    assert (report.usage.prompt_tokens, report.usage.completion_tokens) == (5, 3)
    assert report.model_requested == "org/m:fastest" and report.model_answered == "openai/gpt-oss-120b"


async def test_it_never_sends_the_client_credentials_upstream(async_client, api_key, hf):
    route = hf.post("/chat/completions").respond(200, json=completion())
    await post(async_client, {"messages": MESSAGES, "api_key": "sk-client"})
    sent = route.calls.last.request
    assert b"sk-client" not in sent.content
    assert api_key not in str(sent.headers) and api_key.encode() not in sent.content
    assert sent.headers["authorization"] == f"Bearer {settings.HF_TOKEN}"


async def test_it_fills_the_default_model(async_client, hf):
    route = hf.post("/chat/completions").respond(200, json=completion())
    await post(async_client, {"messages": MESSAGES})
    assert json.loads(route.calls.last.request.content)["model"] == settings.DEFAULT_MODEL


async def test_it_replaces_an_insane_request_id(async_client, hf):
    hf.post("/chat/completions").respond(200, json=completion())
    response = await post(async_client, {"messages": MESSAGES}, x_request_id="bad id\twith spaces")
    assert response["x-request-id"] != "bad id\twith spaces"
    assert len(response["x-request-id"]) == 32


async def test_it_streams_and_drops_the_usage_chunk(async_client, hf, reports):
    answer, _ = sse_response(standard_stream(usage=(9, 2)))
    route = hf.post("/chat/completions").mock(return_value=answer)
    response = await post(async_client, {"messages": MESSAGES, "stream": True})
    assert response.status_code == 200
    assert response["content-type"] == "text/event-stream"
    body = await read_stream(response)
    assert b'"usage"' not in body
    assert events_of(body)[-1] == b"data: [DONE]"
    assert json.loads(route.calls.last.request.content)["stream_options"] == {"include_usage": True}
    [report] = reports
    assert (report.outcome, report.stream, report.usage.total_tokens) == (Outcome.OK, True, 11)
    assert report.first_token_at is not None


async def test_it_keeps_the_usage_chunk_when_asked(async_client, hf):
    answer, _ = sse_response(standard_stream(usage=(9, 2)))
    hf.post("/chat/completions").mock(return_value=answer)
    response = await post(
        async_client, {"messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    )
    events = events_of(await read_stream(response))
    assert json.loads(events[-2][6:])["usage"]["total_tokens"] == 11


async def test_a_stream_quoting_the_token_in_escapes_cut_across_chunks_comes_without_it(async_client, hf):
    spelled = "".join(f"\\u{ord(character):04x}" for character in settings.HF_TOKEN)
    echoing = chunk("heard " + spelled).replace(b"\\\\u", b"\\u")  # the escapes, not backslashes
    cut = echoing.index(b"\\u") + len(spelled) // 2
    stream = [chunk("Hel"), echoing[:cut], echoing[cut:], chunk(finish="stop"), b"data: [DONE]\n\n"]
    hf.post("/chat/completions").mock(return_value=sse_response(stream)[0])
    response = await post(async_client, {"messages": MESSAGES, "stream": True})
    events = events_of(await read_stream(response))
    assert json.loads(events[1][6:])["choices"][0]["delta"]["content"] == "heard ***"
    decoded = [json.loads(event[6:]) for event in events[:-1]]
    assert settings.HF_TOKEN.removeprefix("hf_") not in json.dumps(decoded, ensure_ascii=False)


async def test_it_relays_chunks_as_they_arrive(async_client, hf):
    answer, upstream_body = sse_response(standard_stream(), delay=0.05)
    hf.post("/chat/completions").mock(return_value=answer)
    response = await post(async_client, {"messages": MESSAGES, "stream": True})
    events = response.streaming_content
    first = await anext(events)
    assert b"Hel" in first
    assert upstream_body.sent == 1  # the rest is still on its way
    rest = b"".join([part async for part in events])
    assert rest.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize(
    "payload",
    [
        {"messages": []},
        {"model": "", "messages": MESSAGES},
        {"messages": MESSAGES, "stream": "true"},
        {"messages": MESSAGES, "max_tokens": "10"},
        {"messages": [{"content": "no role"}]},
    ],
)
async def test_it_rejects_bad_input_without_calling_the_router(async_client, hf, reports, payload):
    route = hf.post("/chat/completions").respond(200, json=completion())
    response = await post(async_client, payload)
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert not route.called
    assert [r.outcome for r in reports] == [Outcome.BAD_REQUEST]


async def test_it_rejects_malformed_json(async_client, hf):
    response = await async_client.post(URL, b"{oops", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_it_refuses_other_methods(async_client, hf):
    response = await async_client.get(URL)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("path", ["/v1/completions-nope", "/v1/responses/a/b", "/v1", "/v1/"])
async def test_unknown_api_paths_are_json_404s(anonymous_client, settings, debug, path):
    settings.DEBUG = debug  # DEBUG's own 404 page is HTML: the SDKs would show a bare "404"
    response = await anonymous_client.post(path)
    assert response.status_code == 404
    assert response["content-type"] == "application/json"
    assert response.json()["error"]["message"].startswith("Unknown path")


@pytest.mark.parametrize(
    ("router_status", "status", "code"),
    [
        (400, 400, "x"),
        (401, 502, "upstream_auth_failed"),
        (402, 429, "insufficient_quota"),
        (403, 403, "x"),
        (404, 404, "x"),
        (422, 422, "x"),
        (429, 429, "x"),
        (500, 502, "upstream_error"),
        (503, 503, "upstream_unavailable"),  # it said when to come back: not retried at once
    ],
)
async def test_router_errors_keep_their_meaning(async_client, hf, reports, router_status, status, code):
    hf.post("/chat/completions").respond(
        router_status,
        json={"error": {"message": "router says no", "code": "x"}},
        headers={"Retry-After": "3"},
    )
    response = await post(async_client, {"messages": MESSAGES})
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert "router says no" in error["message"]
    assert settings.HF_TOKEN not in response.content.decode()
    if router_status >= 429:
        assert response["Retry-After"] == "3"  # the router's, passed on
    assert [(r.status, r.outcome) for r in reports] == [(status, Outcome.UPSTREAM_ERROR)]


async def test_a_failure_the_proxy_retried_tells_the_client_not_to_retry(async_client, hf, reports):
    route = hf.post("/chat/completions").respond(500, json={"error": "boom"}, headers={"Retry-After": "2"})
    response = await post(async_client, {"messages": MESSAGES})
    assert (response.status_code, response.json()["error"]["code"]) == (502, "upstream_error")
    assert response["x-should-retry"] == "false" and response["Retry-After"] == "2"
    assert route.call_count == 2 and reports[0].upstream_attempts == 2
    hf.post("/chat/completions").mock(side_effect=httpx.ConnectError("Connection refused"))
    response = await post(async_client, {"messages": MESSAGES})
    assert (response.status_code, response["x-should-retry"]) == (502, "false")


async def test_a_failure_not_retried_leaves_the_retry_to_the_client(async_client, hf, reports):
    hf.post("/chat/completions").respond(429, json={"error": "slow down"})
    response = await post(async_client, {"messages": MESSAGES})
    assert response.status_code == 429 and "x-should-retry" not in response
    assert reports[0].upstream_attempts == 1


async def test_a_model_that_is_loading_is_a_503_with_retry_after(async_client, hf, reports):
    route = hf.post("/chat/completions").respond(
        503, json={"error": "Model org/big is currently loading", "estimated_time": 41.3}
    )
    response = await post(async_client, {"messages": MESSAGES, "stream": True})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "model_loading" and "currently loading" in error["message"]
    assert response["Retry-After"] == "42" and "x-should-retry" not in response
    assert route.call_count == 1  # retrying at once cannot help: the client waits, then retries


async def test_router_errors_on_streams_are_plain_errors(async_client, hf):
    hf.post("/chat/completions").respond(502, text="Service Unavailable")
    response = await post(async_client, {"messages": MESSAGES, "stream": True})
    assert response.status_code == 502
    assert "Service Unavailable" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("answer", "stream"),
    [
        (httpx.Response(200, text="<html>hello</html>"), False),
        (httpx.Response(200, json=[1, 2]), False),
        (httpx.Response(200, json=completion()), True),
        (httpx.Response(302, headers={"Location": "http://elsewhere.test/"}), False),
    ],
)
async def test_malformed_answers_are_bad_gateway(async_client, hf, reports, answer, stream):
    hf.post("/chat/completions").mock(return_value=answer)
    response = await post(async_client, {"messages": MESSAGES, "stream": stream})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_bad_response"
    assert [r.outcome for r in reports] == [Outcome.UPSTREAM_ERROR]


async def test_connection_failures_are_bad_gateway(async_client, hf, reports):
    hf.post("/chat/completions").mock(side_effect=httpx.ConnectError("Connection refused"))
    response = await post(async_client, {"messages": MESSAGES})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unreachable"
    assert [r.outcome for r in reports] == [Outcome.UPSTREAM_ERROR]


async def test_a_router_that_never_answers_times_out(async_client, hf, reports, settings):
    settings.READ_TIMEOUT = 0.2

    async def hang(request):
        await asyncio.sleep(30)

    hf.post("/chat/completions").mock(side_effect=hang)
    response = await post(async_client, {"messages": MESSAGES})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert [(r.status, r.outcome) for r in reports] == [(504, Outcome.TIMEOUT)]


async def test_the_whole_request_is_bounded_even_when_the_router_drips(async_client, hf, reports, settings):
    settings.REQUEST_TIMEOUT = 0.3
    answer, upstream_body = sse_response([chunk(f"w{i}") for i in range(100)], delay=0.05)
    hf.post("/chat/completions").mock(return_value=answer)
    response = await post(async_client, {"messages": MESSAGES, "stream": True})
    events = events_of(await read_stream(response))
    assert json.loads(events[-1][6:])["error"]["code"] == "upstream_timeout"
    assert b"[DONE]" not in b"".join(events)
    assert 2 < upstream_body.sent < 100 and upstream_body.closed
    assert [r.outcome for r in reports] == [Outcome.TIMEOUT]


async def test_a_stream_that_fails_before_its_first_event_keeps_its_status(
    async_client, hf, reports, settings
):
    settings.READ_TIMEOUT = 0.2
    answer, upstream_body = sse_response([], hang_after=True)
    hf.post("/chat/completions").mock(return_value=answer)
    response = await post(async_client, {"messages": MESSAGES, "stream": True})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert upstream_body.closed
    assert [(r.status, r.outcome) for r in reports] == [(504, Outcome.TIMEOUT)]


@pytest.mark.parametrize(
    "events",
    [[b'data: {"error": {"message": "context too long"}}\n\n'], [b"data: {not json\n\n"], []],
)
async def test_a_stream_whose_first_event_is_bad_is_a_plain_502(async_client, hf, reports, events):
    answer, _ = sse_response(events)
    hf.post("/chat/completions").mock(return_value=answer)
    response = await post(async_client, {"messages": MESSAGES, "stream": True})
    assert response.status_code == 502
    assert response["content-type"] == "application/json"
    assert [r.outcome for r in reports] == [Outcome.UPSTREAM_ERROR]


async def test_a_slow_non_streamed_answer_is_bounded_by_the_request_timeout(
    async_client, hf, reports, settings
):
    settings.REQUEST_TIMEOUT = 0.3
    answer, upstream_body = sse_response([b"{"] + [b" "] * 100, delay=0.05)
    hf.post("/chat/completions").mock(return_value=answer)
    response = await post(async_client, {"messages": MESSAGES})
    assert response.status_code == 504
    assert upstream_body.closed
    assert [r.outcome for r in reports] == [Outcome.TIMEOUT]


async def test_a_stalled_stream_times_out(async_client, hf, reports, settings):
    settings.READ_TIMEOUT = 0.2
    answer, upstream_body = sse_response([chunk("a")], hang_after=True)
    hf.post("/chat/completions").mock(return_value=answer)
    response = await post(async_client, {"messages": MESSAGES, "stream": True})
    events = events_of(await read_stream(response))
    assert b'"a"' in events[0]
    assert json.loads(events[-1][6:])["error"]["code"] == "upstream_timeout"
    assert upstream_body.closed


async def test_a_cut_stream_ends_with_an_error_event_not_done(async_client, hf, reports):
    answer, _ = sse_response([chunk("a"), chunk("b")])
    hf.post("/chat/completions").mock(return_value=answer)
    response = await post(async_client, {"messages": MESSAGES, "stream": True})
    events = events_of(await read_stream(response))
    assert len(events) == 3
    assert json.loads(events[-1][6:])["error"]["code"] == "upstream_bad_response"
    assert [r.outcome for r in reports] == [Outcome.UPSTREAM_ERROR]


@pytest.mark.parametrize("include_usage", [False, True])  # the body rewritten, or sent as it came
async def test_a_cut_stream_of_a_long_conversation_estimates_its_prompt(
    async_client, hf, reports, include_usage
):
    # The relay keeps the bytes it sent, not the parsed request: the estimate is the same.
    from gateway import converter

    conversation = [
        {"role": ("user", "assistant")[i % 2], "content": f"turn {i} " + "word " * 200} for i in range(40)
    ]
    tools = [{"type": "function", "function": {"name": "ls", "parameters": {"type": "object"}}}]
    answer, _ = sse_response([chunk("a"), chunk("b")])
    hf.post("/chat/completions").mock(return_value=answer)
    payload = {"messages": conversation, "tools": tools, "stream": True}
    if include_usage:
        payload["stream_options"] = {"include_usage": True}
    await read_stream(await post(async_client, payload))
    [report] = reports
    assert report.outcome == Outcome.UPSTREAM_ERROR
    assert report.usage.prompt_tokens == converter.estimate_prompt_tokens(conversation, tools)


async def test_an_error_event_mid_stream_is_relayed_as_an_error(async_client, hf, reports):
    answer, _ = sse_response([chunk("a"), b'data: {"error": {"message": "GPU fell over"}}\n\n'])
    hf.post("/chat/completions").mock(return_value=answer)
    response = await post(async_client, {"messages": MESSAGES, "stream": True})
    events = events_of(await read_stream(response))
    assert "GPU fell over" in json.loads(events[-1][6:])["error"]["message"]


async def test_a_disconnected_client_closes_the_router_stream(hf, api_key, reports):
    answer, upstream_body = sse_response([chunk(f"w{i}") for i in range(50)], delay=0.02)
    hf.post("/chat/completions").mock(return_value=answer)
    result = await asgi_request(
        "POST",
        URL,
        json.dumps({"messages": MESSAGES, "stream": True}).encode(),
        headers=bearer(api_key),
        disconnect_after_chunks=3,
    )
    assert result.status == 200
    assert upstream_body.closed
    assert upstream_body.sent < 10
    [report] = reports
    assert report.outcome == Outcome.CLIENT_DISCONNECTED


async def test_a_client_leaving_while_headers_are_sent_is_recorded(hf, api_key, reports):
    answer, upstream_body = sse_response([chunk(f"w{i}") for i in range(50)], delay=0.02)
    hf.post("/chat/completions").mock(return_value=answer)
    body = json.dumps({"messages": MESSAGES, "stream": True}).encode()
    # The client leaves just as the headers go out and the write is held up (flow control):
    # Django then never iterates the response.
    result = await asgi_request("POST", URL, body, headers=bearer(api_key), disconnect_on_start=True)
    assert result.status == 200 and not result.chunks
    await asyncio.sleep(0.05)
    assert upstream_body.closed
    assert [r.outcome for r in reports] == [Outcome.CLIENT_DISCONNECTED]


async def test_a_client_leaving_before_the_answer_is_recorded(hf, api_key, reports):
    async def slow(request):
        await asyncio.sleep(30)

    hf.post("/chat/completions").mock(side_effect=slow)
    result = await asgi_request(
        "POST",
        URL,
        json.dumps({"messages": MESSAGES}).encode(),
        headers=bearer(api_key),
        disconnect_after_seconds=0.2,
    )
    assert result.status is None
    assert [r.outcome for r in reports] == [Outcome.CLIENT_DISCONNECTED]


async def test_without_a_token_nothing_is_sent(async_client, hf, settings):
    settings.HF_TOKEN = ""
    route = hf.post("/chat/completions").respond(200, json=completion())
    response = await post(async_client, {"messages": MESSAGES})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_token_missing"
    assert not route.called


async def test_a_connection_failure_is_retried_once(async_client, hf, reports):
    route = hf.post("/chat/completions").mock(
        side_effect=[httpx.RemoteProtocolError("Server disconnected"), httpx.Response(200, json=completion())]
    )
    response = await post(async_client, {"messages": MESSAGES})
    assert response.status_code == 200
    assert route.call_count == 2
    assert [r.outcome for r in reports] == [Outcome.OK]


async def test_a_router_5xx_is_retried_once_then_reported(async_client, hf, reports):
    route = hf.post("/chat/completions").respond(503, text="busy")
    response = await post(async_client, {"messages": MESSAGES})
    assert response.status_code == 502
    assert route.call_count == 2
    route.side_effect = [httpx.Response(503, text="busy"), httpx.Response(200, json=completion())]
    assert (await post(async_client, {"messages": MESSAGES})).status_code == 200
    route.side_effect = None
    route.return_value = httpx.Response(200, json=completion())
    assert (await post(async_client, {"messages": MESSAGES})).status_code == 200
    # Each record says how often the router was called: a retry may have been billed twice.
    assert [r.upstream_attempts for r in reports] == [2, 2, 1]


@pytest.mark.parametrize("status", [400, 401, 402, 404, 429])
async def test_client_errors_and_limits_are_not_retried(async_client, hf, status):
    route = hf.post("/chat/completions").respond(status, json={"error": "no"})
    await post(async_client, {"messages": MESSAGES})
    assert route.call_count == 1


async def test_a_timeout_is_not_retried(async_client, hf, settings):
    settings.READ_TIMEOUT = 0.1
    attempts = []

    async def hang(request):
        attempts.append(request)
        await asyncio.sleep(30)

    hf.post("/chat/completions").mock(side_effect=hang)
    assert (await post(async_client, {"messages": MESSAGES})).status_code == 504
    assert len(attempts) == 1


async def test_a_stream_is_recorded_before_its_last_event_goes_out(async_client, hf, reports):
    # A worker killed between the last event and the end of the response loses nothing: the
    # record is in the journal by the time the client has the whole answer.
    answer, _ = sse_response(standard_stream(usage=(3, 4)))
    hf.post("/chat/completions").mock(return_value=answer)
    response = await post(async_client, {"messages": MESSAGES, "stream": True})
    reported_by_then = None
    async for part in response.streaming_content:
        if b"[DONE]" in part:
            reported_by_then = len(reports)
    assert reported_by_then == 1
    assert [(r.outcome, r.usage.total_tokens) for r in reports] == [(Outcome.OK, 7)]
