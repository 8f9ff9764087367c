"""Router faults: each ends the way it should for the client, and leaves exactly one record."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.faults import FAULTS
from tests.support.harness import CANARY_TOKEN, chat, open_request, request_id, send


@pytest.mark.parametrize("fault", FAULTS, ids=lambda fault: fault.id)
def test_router_fault(proxy, stats, fault):
    answer = send(proxy, chat(fault.model, fault.stream))
    assert answer.status == fault.status, answer.body
    record = proxy.record(answer.request_id)
    assert (record["status"], record["outcome"], record["error_code"]) == (
        fault.status,
        fault.outcome,
        fault.code or "",
    )
    assert stats()["attempts"].get(fault.model, 0) == record["upstream_attempts"] == fault.attempts
    assert CANARY_TOKEN not in answer.body.decode(errors="replace")
    if fault.seconds:
        assert fault.seconds <= answer.seconds < fault.seconds + 1, answer.seconds

    if fault.status != 200:
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == fault.code
    elif fault.code:  # the stream started: its chunks so far, then an error event, no [DONE]
        events = answer.events
        assert "[DONE]" not in events
        error = json.loads(events[-1])["error"]
        assert error["code"] == fault.code
        chunks = [json.loads(event) for event in events[:-1]]
        assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
        assert len(chunks) == fault.events if fault.events >= 0 else len(chunks) > 5
    elif fault.stream:
        assert answer.events[-1] == "[DONE]"


def test_a_router_401_names_the_token_never_its_value(proxy):
    answer = send(proxy, chat("fault/echo-auth-401"))
    message = answer.json()["error"]["message"]
    assert "canary" in message  # the token's name
    assert CANARY_TOKEN not in message and CANARY_TOKEN[3:] not in message
    assert answer.headers["x-should-retry"] == "false"
    # What the admin flags the token by (tests/accounts/test_admin.py shows the flag).
    record = proxy.record(answer.request_id)
    token = proxy.db.query("SELECT id FROM accounts_huggingfacetoken WHERE id = %s", record["hf_token_id"])
    assert record["error_code"] == "upstream_auth_failed" and token


def test_429_and_503_pass_retry_after_on(proxy):
    for model in ("fault/status-429", "fault/status-429-empty", "fault/status-503"):
        answer = send(proxy, chat(model))
        assert answer.headers["retry-after"] == "7"
        assert "x-should-retry" not in answer.headers  # not retried here: the client may


def test_a_failure_the_proxy_retried_tells_the_client_not_to(proxy):
    for model in ("fault/status-500", "fault/status-504-empty", "fault/status-502"):
        answer = send(proxy, chat(model))
        assert (answer.status, answer.headers["x-should-retry"]) == (502, "false")


def test_a_redirect_is_not_followed(proxy, stats):
    send(proxy, chat("fault/redirect"))
    assert stats()["redirected"] == 0


def test_a_router_that_refuses_connections_is_a_fast_502(proxy, router):
    router.stop()
    try:
        answer = send(proxy, chat("openai/gpt-oss-120b:fireworks-ai"))
        streamed = send(proxy, chat("openai/gpt-oss-120b:fireworks-ai", stream=True))
    finally:
        router.start()
    for each in (answer, streamed):
        assert each.status == 502
        assert each.json()["error"]["code"] == "upstream_unreachable"
        assert each.seconds < 1
        record = proxy.record(each.request_id)
        assert (record["outcome"], record["error_code"]) == ("upstream_error", "upstream_unreachable")
        assert record["upstream_attempts"] == 2  # refused, retried once, refused again
    # And the proxy comes back with the router.
    assert send(proxy, chat("openai/gpt-oss-120b:fireworks-ai")).status == 200


def test_the_retry_never_happens_after_the_client_left(proxy, stats):
    rid = request_id()
    with open_request(proxy, chat("fault/slow-status-500"), rid):
        time.sleep(0.3)
    time.sleep(1.5)  # the router's 500 comes after 1 s: a retry would have been sent by now
    assert stats()["attempts"]["fault/slow-status-500"] == 1
    record = proxy.record(rid)
    assert record["outcome"] == "client_disconnected"
