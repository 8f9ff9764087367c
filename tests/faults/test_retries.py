"""Retries do not multiply: one failing call of the official SDK, with its default retries,
costs at most three router calls (README, "Retries cannot multiply")."""

from __future__ import annotations

import openai
import pytest

MESSAGES = [{"role": "user", "content": "hello"}]


def sdk(proxy) -> openai.OpenAI:
    # The SDK as a user has it: default max_retries (2), default backoff.
    return openai.OpenAI(base_url=proxy.api, api_key=proxy.keys["team"])


@pytest.mark.parametrize(
    ("model", "stream", "calls"),
    [
        ("fault/status-500", False, 2),  # retried by the proxy, then x-should-retry: false
        ("fault/status-502", True, 2),
        ("fault/status-504-empty", False, 2),
        ("fault/hang", False, 3),  # a 504 timeout: not retried by the proxy, twice by the SDK
    ],
)
def test_one_failing_sdk_call_costs_at_most_three_router_calls(proxy, stats, model, stream, calls):
    client = sdk(proxy)
    with pytest.raises(openai.APIStatusError):  # a stream fails before its first event: a status
        client.chat.completions.create(model=model, messages=MESSAGES, stream=stream)
    assert stats()["attempts"][model] == calls
