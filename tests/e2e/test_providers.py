"""Streams as real providers end them (tests/support/fake_router.py's provider styles), through a real
server, read by the openai SDK: the whole answer, no exception, and a record that says what
happened."""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest

from tests.support.harness import router_and_proxy

pytestmark = pytest.mark.e2e
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
MESSAGES = [{"role": "user", "content": "Count to twenty."}]
ANSWER = "".join(f"tok{i} " for i in range(20))  # what the fake router says, in 20 chunks


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    with router_and_proxy(tmp_path_factory.mktemp("providers")) as (_, proxy):
        yield proxy


def stream(proxy, provider: str, **options) -> tuple[str, list, dict]:
    """Stream one answer from `MODEL:provider` with the SDK: its text, its chunks, its record."""
    client = openai.OpenAI(base_url=proxy.api, api_key=proxy.keys["team"], max_retries=0)
    rid = uuid.uuid4().hex
    chunks = list(
        client.chat.completions.create(
            model=f"{MODEL}:{provider}",
            messages=MESSAGES,
            stream=True,
            extra_headers={"X-Request-Id": rid},
            **options,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks, proxy.record(rid)


@pytest.mark.parametrize("provider", ["cerebras", "hf-inference"])
def test_a_stream_that_ends_without_done_after_the_answer_finished_is_complete(proxy, provider):
    # Cerebras and TGI close the stream after the chunk with finish_reason: no [DONE].
    text, chunks, record = stream(proxy, provider)
    assert text == ANSWER
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert (record["status"], record["outcome"], record["error_code"]) == (200, "ok", "")
    assert record["provider"] == provider


def test_the_client_gets_done_from_the_proxy_when_the_provider_sent_none(proxy):
    body = {"model": f"{MODEL}:cerebras", "messages": MESSAGES, "stream": True}
    answer = httpx.post(proxy.api + "/chat/completions", json=body, headers=proxy.auth("team"), timeout=15)
    assert answer.status_code == 200
    assert answer.content.endswith(b"data: [DONE]\n\n")
    assert b'"error"' not in answer.content


def test_cerebras_usage_in_the_finish_chunk_is_the_providers(proxy):
    text, chunks, record = stream(proxy, "cerebras", stream_options={"include_usage": True})
    assert text == ANSWER
    assert chunks[-1].usage.completion_tokens == 20
    assert (record["usage_source"], record["completion_tokens"]) == ("provider", 20)


@pytest.mark.parametrize("provider", ["nebius", "hf-inference"])
def test_a_stream_without_usage_even_when_asked_is_recorded_as_estimated(proxy, provider):
    text, chunks, record = stream(proxy, provider, stream_options={"include_usage": True})
    assert text == ANSWER
    assert all(chunk.usage is None for chunk in chunks)  # nothing to pass on
    assert (record["outcome"], record["usage_source"]) == ("ok", "estimated")
    assert record["prompt_tokens"] > 0 and record["completion_tokens"] > 0


def test_cumulative_usage_in_every_chunk_counts_once(proxy):
    # Novita's style here: every chunk carries the running totals; the last is the answer's.
    text, chunks, record = stream(proxy, "novita", stream_options={"include_usage": True})
    assert text == ANSWER
    assert chunks[-1].usage.completion_tokens == 20
    assert (record["outcome"], record["usage_source"], record["completion_tokens"]) == ("ok", "provider", 20)


def test_data_without_a_space_and_crlf_line_ends_are_read(proxy):
    text, chunks, record = stream(proxy, "hyperbolic", stream_options={"include_usage": True})
    assert text == ANSWER
    assert chunks[-1].usage.completion_tokens == 20
    assert (record["outcome"], record["usage_source"], record["completion_tokens"]) == ("ok", "provider", 20)
