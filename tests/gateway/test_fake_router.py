"""The fake router's Responses and Messages APIs (tests/support/fake_router.py), run as the other
suites run it, in its own process: its answers have the shape of the golden ones, written from
the public references (OpenAI's OpenAPI spec for the Response object and its stream events,
Anthropic's Messages API reference for the Message object and its stream), its usage follows
the rule tests/support/router_events.py documents, and its faults end as they say."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from tests.support import fake_router, router_events
from tests.support.harness import Router

GOLDEN = Path(__file__).parent / "golden"
CHUNKS = 5
MODEL = "openai/gpt-oss-120b"
RESPONSE_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * CHUNKS,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
MESSAGE_EVENTS = [
    "message_start",
    "content_block_start",
    "ping",
    *["content_block_delta"] * CHUNKS,
    "content_block_stop",
    "message_delta",
    "message_stop",
]


@pytest.fixture(scope="module")
def router():
    router = Router(FAKE_ROUTER_CHUNKS=str(CHUNKS))
    router.start()
    yield router
    router.stop()


def parse_sse(body: bytes) -> list[tuple[str | None, dict]]:
    """(event line, data) of each event; the data must be JSON."""
    events = []
    for block in body.decode().split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields.get("event"), json.loads(fields["data"])))
    return events


def assert_shape(golden, actual, where="") -> None:
    """Every field of the golden answer is in the fake's, with a value of the same kind
    (null stands for any kind); lists are compared by their first element."""
    if golden is None or actual is None:
        return
    if isinstance(golden, dict):
        assert isinstance(actual, dict), where
        for key, value in golden.items():
            assert key in actual, f"{where}.{key} missing"
            assert_shape(value, actual[key], f"{where}.{key}")
    elif isinstance(golden, list):
        assert isinstance(actual, list), where
        if golden and actual:
            assert_shape(golden[0], actual[0], f"{where}[0]")
    elif isinstance(golden, bool) or isinstance(actual, bool):
        assert type(golden) is type(actual), where
    elif isinstance(golden, int | float):
        assert isinstance(actual, int | float), where
    else:
        assert type(golden) is type(actual), where


def assert_stream_like_golden(name: str, body: bytes) -> None:
    """The same event types in the same order (the golden stream has its own number of
    deltas), each with the golden event's fields."""
    golden = parse_sse((GOLDEN / name).read_bytes())
    actual = parse_sse(body)

    def runs(events):
        kinds = [data["type"] for _, data in events]
        return [kind for i, kind in enumerate(kinds) if i == 0 or kinds[i - 1] != kind]

    assert runs(actual) == runs(golden)
    examples = {data["type"]: data for _, data in golden}
    for event, data in actual:
        assert event == data["type"]
        assert_shape(examples[data["type"]], data, data["type"])


def post(router: Router, path: str, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(router.url + path, json=body, headers=headers, timeout=5)


# The Responses API.


def test_responses_answer_is_shaped_like_the_golden_one(router):
    answer = post(router, "/v1/responses", {"model": MODEL, "input": "Say hello"})
    assert answer.status_code == 200
    assert_shape(json.loads((GOLDEN / "responses.json").read_text()), answer.json())
    data = answer.json()
    assert data["id"].startswith("resp_") and data["status"] == "completed"
    assert data["output"][0]["content"][0]["text"] == " ".join(f"tok{i}" for i in range(CHUNKS))


def test_responses_stream_is_shaped_like_the_golden_one(router):
    answer = post(router, "/v1/responses", {"model": MODEL, "input": "Say hello", "stream": True})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert b"[DONE]" not in answer.content
    assert_stream_like_golden("responses_stream.sse", answer.content)
    events = [data for _, data in parse_sse(answer.content)]
    assert [e["type"] for e in events] == RESPONSE_EVENTS
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == text


@pytest.mark.parametrize("stream", [False, True])
def test_responses_usage_follows_the_documented_rule(router, stream):
    request = {
        "model": MODEL + ":fireworks-ai",
        "instructions": "Be brief",
        "input": [
            {"role": "user", "content": "one two three"},
            {"role": "user", "content": [{"type": "input_text", "text": "four five"}]},
        ],
        "reasoning": {"effort": "low"},
        "prompt_cache_key": "session-1",
        "previous_response_id": "resp_earlier",
        "stream": stream,
    }
    answer = post(router, "/v1/responses", request)
    response = parse_sse(answer.content)[-1][1]["response"] if stream else answer.json()
    reasoning = router_events.REASONING_TOKENS
    assert response["usage"] == {
        "input_tokens": 7,
        "input_tokens_details": {"cached_tokens": 3},
        "output_tokens": CHUNKS + reasoning,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": 7 + CHUNKS + reasoning,
    }
    assert answer.headers["x-inference-provider"] == "fireworks-ai"


def test_responses_usage_without_cache_key_or_reasoning(router):
    usage = post(router, "/v1/responses", {"model": MODEL, "input": "a b c"}).json()["usage"]
    assert usage["input_tokens_details"] == {"cached_tokens": 0}
    assert usage["output_tokens_details"] == {"reasoning_tokens": 0}
    assert usage["output_tokens"] == CHUNKS


@pytest.mark.parametrize(
    ("model", "code"), [("m", "model_not_found"), ("org/unknown", "model_not_supported")]
)
def test_responses_refuses_unknown_models_like_chat(router, model, code):
    answer = post(router, "/v1/responses", {"model": model, "input": "hi"})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == code
    assert router.stats()["refused"][model] >= 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/responses/resp_1"),
        ("DELETE", "/v1/responses/resp_1"),
        ("POST", "/v1/responses/resp_1/cancel"),
        ("GET", "/v1/responses/resp_1/input_items"),
    ],
)
def test_stored_responses_are_not_served(router, method, path):
    answer = httpx.request(method, router.url + path, timeout=5)
    assert (answer.status_code, answer.json()) == (404, {"error": "Not Found"})


def test_responses_cut_ends_cleanly_before_completed(router):
    answer = post(router, "/v1/responses", {"model": "fault/cut", "input": "hi", "stream": True})
    kinds = [data["type"] for _, data in parse_sse(answer.content)]
    assert kinds == RESPONSE_EVENTS[:4] + ["response.output_text.delta"] * 2


def test_responses_break_drops_the_connection(router):
    with pytest.raises(httpx.RemoteProtocolError):
        post(router, "/v1/responses", {"model": "fault/break", "input": "hi", "stream": True})


def test_responses_bad_sse_sends_an_event_that_is_not_json(router):
    answer = post(router, "/v1/responses", {"model": "fault/bad-sse", "input": "hi", "stream": True})
    assert answer.content.endswith(b"event: response.output_text.delta\ndata: {this is not json\n\n")


@pytest.mark.parametrize("stream", [False, True])
def test_responses_no_usage(router, stream):
    answer = post(router, "/v1/responses", {"model": "fault/no-usage", "input": "hi", "stream": stream})
    response = parse_sse(answer.content)[-1][1]["response"] if stream else answer.json()
    assert response["status"] == "completed" and response["usage"] is None


@pytest.mark.parametrize("stream", [False, True])
def test_responses_failed(router, stream):
    answer = post(router, "/v1/responses", {"model": "fault/failed", "input": "hi", "stream": stream})
    assert answer.status_code == 200
    if stream:
        events = [data for _, data in parse_sse(answer.content)]
        assert [e["type"] for e in events][-3:] == ["response.output_text.delta"] * 2 + ["response.failed"]
        response = events[-1]["response"]
    else:
        response = answer.json()
    assert response["status"] == "failed" and response["error"]["code"] == "server_error"
    assert response["usage"] is None


@pytest.mark.parametrize("stream", [False, True])
def test_responses_incomplete_carries_usage(router, stream):
    answer = post(router, "/v1/responses", {"model": "fault/incomplete", "input": "hi", "stream": stream})
    if stream:
        events = [data for _, data in parse_sse(answer.content)]
        assert [e["type"] for e in events] == [*RESPONSE_EVENTS[:-1], "response.incomplete"]
        response = events[-1]["response"]
    else:
        response = answer.json()
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["usage"]["output_tokens"] == CHUNKS


def test_responses_data_only_framing(router):
    answer = post(router, "/v1/responses", {"model": "fault/data-only", "input": "hi", "stream": True})
    events = parse_sse(answer.content)
    assert all(event is None for event, _ in events)
    assert [data["type"] for _, data in events] == RESPONSE_EVENTS


@pytest.mark.parametrize("model", ["fault/status-429", "fault/status-503-empty"])
def test_responses_status_faults(router, model):
    answer = post(router, "/v1/responses", {"model": model, "input": "hi"})
    assert answer.status_code == int(model.split("-")[1])
    assert answer.headers["retry-after"] == "7"


# The Anthropic Messages API.

ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01", "anthropic-beta": "a-beta,another-beta"}


def messages(router: Router, body: dict, query: str = "?beta=true") -> httpx.Response:
    request = {"max_tokens": 100, "messages": [{"role": "user", "content": "Say hello"}], **body}
    return post(router, "/v1/messages" + query, request, **ANTHROPIC_HEADERS)


def test_messages_answer_is_shaped_like_the_golden_one(router):
    answer = messages(router, {"model": MODEL})
    assert answer.status_code == 200
    assert_shape(json.loads((GOLDEN / "messages.json").read_text()), answer.json())
    data = answer.json()
    assert data["id"].startswith("msg_") and data["stop_reason"] == "end_turn"
    assert data["content"] == [{"type": "text", "text": " ".join(f"tok{i}" for i in range(CHUNKS))}]


def test_messages_stream_is_shaped_like_the_golden_one(router):
    answer = messages(router, {"model": MODEL, "stream": True})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert_stream_like_golden("messages_stream.sse", answer.content)
    events = [data for _, data in parse_sse(answer.content)]
    assert [e["type"] for e in events] == MESSAGE_EVENTS
    assert events[0]["message"]["usage"]["output_tokens"] == 1
    assert events[-2]["usage"]["output_tokens"] == CHUNKS


def test_messages_records_the_anthropic_headers_and_query(router):
    messages(router, {"model": MODEL})
    stats = router.stats()
    assert stats["last_headers"]["anthropic-version"] == "2023-06-01"
    assert stats["last_headers"]["anthropic-beta"] == "a-beta,another-beta"
    assert stats["last_query"] == "beta=true"
    assert json.loads(stats["last_body"])["max_tokens"] == 100


@pytest.mark.parametrize("stream", [False, True])
def test_messages_usage_follows_the_documented_rule(router, stream):
    body = {
        "model": MODEL,
        "system": [{"type": "text", "text": "You are terse", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "one two three"},
            {"role": "assistant", "content": [{"type": "text", "text": "four five six"}]},
            {"role": "user", "content": "seven"},
        ],
        "stream": stream,
    }
    answer = messages(router, body)
    expected = {
        "input_tokens": 10 - 5 - 2,
        "cache_creation_input_tokens": 2,
        "cache_read_input_tokens": 5,
        "output_tokens": CHUNKS,
    }
    if stream:
        events = [data for _, data in parse_sse(answer.content)]
        assert events[0]["message"]["usage"] == {**expected, "output_tokens": 1}
        assert events[-2]["usage"] == expected
    else:
        assert answer.json()["usage"] == expected


def test_messages_usage_without_cache_control(router):
    usage = messages(router, {"model": MODEL}).json()["usage"]
    assert usage == {
        "input_tokens": 2,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": CHUNKS,
    }


@pytest.mark.parametrize("model", ["m", "org/unknown"])
def test_messages_refuses_unknown_models_in_anthropic_shape(router, model):
    answer = messages(router, {"model": model})
    assert answer.status_code == 400
    assert answer.json()["type"] == "error"
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert model in answer.json()["error"]["message"]


def test_messages_requires_max_tokens(router):
    answer = post(router, "/v1/messages", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 400
    assert answer.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }


@pytest.mark.parametrize("stream", [False, True])
def test_messages_overloaded(router, stream):
    answer = messages(router, {"model": "fault/overloaded", "stream": stream})
    assert answer.status_code == 529
    assert answer.json() == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


@pytest.mark.parametrize(
    ("model", "kind"), [("fault/status-429", "rate_limit_error"), ("fault/status-500", "api_error")]
)
def test_messages_status_faults_in_anthropic_shape(router, model, kind):
    answer = messages(router, {"model": model})
    assert answer.status_code == int(model.rpartition("-")[2])
    assert answer.json()["error"]["type"] == kind


def test_messages_echo_auth_quotes_what_arrived(router):
    answer = post(
        router,
        "/v1/messages",
        {"model": "fault/echo-auth-401", "max_tokens": 1, "messages": []},
        authorization="Bearer hf_x",
        **{"x-api-key": "sk-client"},
    )
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "authentication_error"
    assert "Bearer hf_x" in answer.json()["error"]["message"]
    assert "sk-client" in answer.json()["error"]["message"]


def test_messages_cut_ends_cleanly_before_message_stop(router):
    answer = messages(router, {"model": "fault/cut", "stream": True})
    kinds = [data["type"] for _, data in parse_sse(answer.content)]
    assert kinds == MESSAGE_EVENTS[:3] + ["content_block_delta"] * 2


def test_messages_failed_sends_an_error_event(router):
    answer = messages(router, {"model": "fault/failed", "stream": True})
    kinds = [event for event, _ in parse_sse(answer.content)]
    assert kinds == [*MESSAGE_EVENTS[:3], "content_block_delta", "content_block_delta", "error"]
    assert parse_sse(answer.content)[-1][1]["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize("stream", [False, True])
def test_messages_no_usage(router, stream):
    answer = messages(router, {"model": "fault/no-usage", "stream": stream})
    if stream:
        events = [data for _, data in parse_sse(answer.content)]
        assert "usage" not in events[0]["message"] and "usage" not in events[-2]
    else:
        assert "usage" not in answer.json()


def test_messages_incomplete_stops_at_max_tokens(router):
    assert messages(router, {"model": "fault/incomplete"}).json()["stop_reason"] == "max_tokens"


def test_count_tokens_is_not_served(router):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    answer = post(router, "/v1/messages/count_tokens", body, **ANTHROPIC_HEADERS)
    assert (answer.status_code, answer.json()) == (404, {"error": "Not Found"})


# HF Inference's automatic-speech-recognition.

WHISPER = "/hf-inference/models/openai/whisper-large-v3"


def test_speech_recognition_takes_the_audio_as_the_body(router):
    answer = httpx.post(router.url + WHISPER, content=b"RIFF audio", headers={"content-type": "audio/wav"})
    assert answer.json() == {"text": fake_router.transcript(b"RIFF audio")}
    assert router.stats()["last_audio"] == {"content_type": "audio/wav", "bytes": 10, "parameters": {}}


def test_speech_recognition_with_parameters_and_timestamps(router):
    body = {"inputs": base64.b64encode(b"RIFF audio").decode(), "parameters": {"return_timestamps": True}}
    answer = post(router, WHISPER, body).json()
    assert answer["text"] == fake_router.transcript(b"RIFF audio")
    assert "".join(chunk["text"] for chunk in answer["chunks"]) == answer["text"]
    assert answer["chunks"][-1]["timestamp"][1] is None  # Whisper's open end


def test_speech_recognition_refuses_other_models_and_empty_audio(router):
    other = httpx.post(router.url + "/hf-inference/models/nobody/asr", content=b"x")
    empty = httpx.post(router.url + WHISPER, content=b"")
    assert (other.status_code, other.json()) == (
        400,
        {"error": "Model not supported by provider hf-inference"},
    )
    assert (empty.status_code, "error" in empty.json()) == (400, True)


# Text-to-image: HF Inference's, the OpenAI-shaped provider routes, and the Hub's mapping.

FLUX = "black-forest-labs/FLUX.1-schnell"


def png_size(image: bytes) -> tuple[int, int]:
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    return int.from_bytes(image[16:20], "big"), int.from_bytes(image[20:24], "big")


def test_hf_inference_text_to_image_answers_a_png_of_the_size_asked(router):
    body = {"inputs": "a cat", "parameters": {"width": 96, "height": 64}}
    answer = post(router, f"/hf-inference/models/{FLUX}", body)
    assert (answer.status_code, answer.headers["content-type"]) == (200, "image/png")
    assert png_size(answer.content) == (96, 64)
    assert png_size(post(router, f"/hf-inference/models/{FLUX}", {"inputs": "a cat"}).content) == (1024, 1024)
    # A model HF Inference does not serve for images: its 400.
    other = post(router, "/hf-inference/models/Qwen/Qwen-Image", {"inputs": "a cat"})
    assert other.json() == {"error": "Model not supported by provider hf-inference"}


def test_provider_routes_take_their_own_ids_and_base64_words(router):
    body = {"model": "black-forest-labs/FLUX.1-schnell-Free", "prompt": "a cat", "response_format": "base64"}
    together = post(router, "/together/v1/images/generations", {**body, "n": 2, "width": 80, "height": 48})
    assert [png_size(base64.b64decode(item["b64_json"])) for item in together.json()["data"]] == [
        (80, 48)
    ] * 2
    nscale = {
        "model": "BlackForestLabs/FLUX.1-schnell",
        "prompt": "x",
        "response_format": "b64_json",
        "size": "64x72",
    }
    (image,) = post(router, "/nscale/v1/images/generations", {**nscale, "n": 3}).json()["data"]
    assert png_size(base64.b64decode(image["b64_json"])) == (64, 72)  # one image, whatever `n` says
    hf_id = post(router, "/together/v1/images/generations", {**body, "model": FLUX})
    assert (hf_id.status_code, hf_id.json()["error"]["code"]) == (404, "model_not_available")
    wrong_word = post(
        router, "/nebius/v1/images/generations", {**body, "model": "black-forest-labs/flux-schnell"}
    )
    assert wrong_word.status_code == 400


def test_the_hub_maps_models_to_providers_in_its_object_form(router):
    info = httpx.get(
        f"{router.url}/api/models/{FLUX}", params={"expand[]": "inferenceProviderMapping"}
    ).json()
    mapping = info["inferenceProviderMapping"]
    assert list(mapping) == list(fake_router.IMAGE_MODELS[FLUX])
    assert mapping["together"] == {
        "status": "live",
        "providerId": "black-forest-labs/FLUX.1-schnell-Free",
        "task": "text-to-image",
    }
    chat = httpx.get(
        f"{router.url}/api/models/{MODEL}", params={"expand[]": "inferenceProviderMapping"}
    ).json()
    assert chat["inferenceProviderMapping"]["fireworks-ai"]["task"] == "conversational"
    assert "inferenceProviderMapping" not in httpx.get(f"{router.url}/api/models/{FLUX}").json()
    unknown = httpx.get(f"{router.url}/api/models/nobody/none")
    assert (unknown.status_code, unknown.headers["x-error-code"]) == (404, "RepoNotFound")


@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_answer_stops_at_max_tokens_as_a_provider_does(router, stream):
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    answer = httpx.post(f"{router.url}/v1/chat/completions", json=body, timeout=10)
    if stream:
        chunks = [json.loads(line[6:]) for line in answer.text.splitlines() if line[6:].startswith("{")]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1]
        usage = chunks[-1]["usage"]
    else:
        choice = answer.json()["choices"][0]
        text, finish, usage = choice["message"]["content"], choice["finish_reason"], answer.json()["usage"]
    assert text.split() == ["tok0", "tok1"] and finish == "length"
    assert usage["completion_tokens"] == 2
