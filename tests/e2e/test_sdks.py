"""The official SDKs of the Responses and Messages APIs against a real hfproxy (`manage.py serve`)
in front of the fake router: `openai` (`responses.create`, streamed and not, `responses.parse`)
and `anthropic` (`messages.create`, `messages.stream`, `count_tokens`). Each call leaves exactly
one usage record with the counts the SDK itself was given, cached and reasoning tokens included
(the fake's usage rule: tests/support/router_events.py)."""

from __future__ import annotations

import uuid

import anthropic
import openai
import pytest
from pydantic import BaseModel

from tests.support.harness import router_and_proxy
from tests.support.router_events import REASONING_TOKENS

pytestmark = pytest.mark.e2e

MODEL = "openai/gpt-oss-120b:fireworks-ai"
WORDS = "one two three four five six seven eight"  # 8 words: the fake's input count


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    with router_and_proxy(tmp_path_factory.mktemp("sdks")) as (_, proxy):
        yield proxy


def rid() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def oai(proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.api, api_key=proxy.keys["team"], max_retries=0)


@pytest.fixture
def claude(proxy) -> anthropic.Anthropic:
    # The SDK sends the key as x-api-key, with anthropic-version, to {base_url}/v1/messages.
    return anthropic.Anthropic(base_url=proxy.url, api_key=proxy.keys["team"], max_retries=0)


def counts(record: dict) -> tuple:
    return tuple(
        record[name]
        for name in (
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "cached_tokens",
            "reasoning_tokens",
        )
    )


def test_responses_create_leaves_one_record_with_cached_and_reasoning_tokens(proxy, oai):
    request_id = rid()
    response = oai.responses.create(
        model=MODEL,
        input=WORDS,
        prompt_cache_key="team-cache",
        reasoning={"effort": "low"},
        extra_headers={"X-Request-Id": request_id},
    )
    assert response.output_text
    usage = response.usage
    assert (usage.input_tokens, usage.input_tokens_details.cached_tokens) == (8, 4)
    assert usage.output_tokens_details.reasoning_tokens == REASONING_TOKENS
    [record] = [proxy.record(request_id)]
    assert len(proxy.records(request_id)) == 1
    assert (record["endpoint"], record["outcome"], record["stream"]) == ("responses", "ok", False)
    assert counts(record) == (8, usage.output_tokens, usage.total_tokens, 4, REASONING_TOKENS)


def test_a_responses_stream_is_read_by_the_sdk_to_its_completed_event(proxy, oai):
    request_id = rid()
    kinds = []
    with oai.responses.stream(model=MODEL, input=WORDS, extra_headers={"X-Request-Id": request_id}) as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert final.output_text and final.usage.input_tokens == 8
    record = proxy.record(request_id)
    assert (record["endpoint"], record["outcome"], record["stream"], record["usage_source"]) == (
        "responses",
        "ok",
        1,
        "provider",
    )
    assert counts(record) == (8, final.usage.output_tokens, final.usage.total_tokens, 0, 0)


class Weather(BaseModel):
    city: str
    degrees: int


def test_responses_parse_gives_the_structured_output(proxy, oai):
    request_id = rid()
    parsed = oai.responses.parse(
        model=MODEL,
        input="The weather in Paris?",
        text_format=Weather,
        extra_headers={"X-Request-Id": request_id},
    )
    assert isinstance(parsed.output_parsed, Weather)
    assert proxy.record(request_id)["outcome"] == "ok"


def test_an_unknown_model_is_the_router_s_error_through_the_sdk(proxy, oai):
    request_id = rid()
    with pytest.raises(openai.BadRequestError) as raised:
        oai.responses.create(model="nobody/nothing", input="hi", extra_headers={"X-Request-Id": request_id})
    assert raised.value.body["param"] == "model"
    assert proxy.record(request_id)["status"] == 400


def test_messages_create_leaves_one_record_with_anthropic_s_counts(proxy, claude):
    request_id = rid()
    message = claude.messages.create(
        model=MODEL,
        max_tokens=64,
        system=[{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": WORDS}],
        extra_headers={"X-Request-Id": request_id},
    )
    assert message.content[0].text
    usage = message.usage
    # 10 words with the system prompt: 5 read from the cache, 2 written to it, 3 uncached.
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens, usage.input_tokens) == (5, 2, 3)
    record = proxy.record(request_id)
    assert (record["endpoint"], record["outcome"]) == ("messages", "ok")
    assert counts(record) == (10, usage.output_tokens, 10 + usage.output_tokens, 5, None)


def test_messages_stream_is_read_by_the_sdk_to_message_stop(proxy, claude):
    request_id = rid()
    with claude.messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": WORDS}],
        extra_headers={"X-Request-Id": request_id},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.stop_reason == "end_turn"
    record = proxy.record(request_id)
    assert (record["outcome"], record["stream"], record["usage_source"]) == ("ok", 1, "provider")
    assert counts(record)[:3] == (8, final.usage.output_tokens, 8 + final.usage.output_tokens)


def test_count_tokens_answers_though_the_router_has_none(proxy, claude):
    request_id = rid()
    counted = claude.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": WORDS}], extra_headers={"X-Request-Id": request_id}
    )
    assert counted.input_tokens > 0
    record = proxy.record(request_id)
    assert (record["endpoint"], record["outcome"], record["total_tokens"]) == ("count_tokens", "ok", None)


def test_anthropic_errors_reach_the_sdk_as_its_own_exceptions(proxy):
    bad = anthropic.Anthropic(base_url=proxy.url, api_key="hfp_wrong-key-0000000000000", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
