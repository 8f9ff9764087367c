from __future__ import annotations

import contextvars
import logging

import httpx

from gateway import errors, scrub, upstream
from gateway.exchange import Exchange
from gateway.upstream import UpstreamError
from tests.support.factories import caller

TOKEN = "canarylowercase0123456789abcdefgh"
SECRETS = scrub.secrets_of(TOKEN)


def test_it_keeps_a_code_that_is_a_code():
    assert scrub.code("model_not_found", SECRETS) == "model_not_found"
    assert scrub.code(429, SECRETS) == "429"


def test_it_rejects_a_code_that_is_free_text_or_the_token():
    for value in ("Bearer x", "a" * 41, TOKEN, TOKEN[:20], True, None, {"a": 1}):
        assert scrub.code(value, SECRETS) is None, value


def test_it_scrubs_the_token_with_and_without_its_prefix():
    secrets = scrub.secrets_of("hf_AbCdEfGh123456")
    assert scrub.text("a hf_AbCdEfGh123456 b AbCdEfGh123456", secrets) == "a *** b ***"
    assert scrub.raw(b'{"x": "hf_AbCdEfGh123456"}', secrets) == b'{"x": "***"}'


def test_it_scrubs_every_string_of_a_tree():
    data = {TOKEN: [TOKEN, {"k": f"Bearer {TOKEN}"}], "n": 1}
    assert scrub.tree(data, SECRETS) == {"***": ["***", {"k": "Bearer ***"}], "n": 1}


def test_it_keeps_only_a_retry_after_that_is_one():
    assert scrub.retry_after("7") == "7"
    assert scrub.retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert scrub.retry_after(TOKEN) == ""
    assert scrub.retry_after("²") == ""


def test_a_router_error_quoting_the_token_is_passed_on_without_it():
    body = b'{"error": {"message": "bad: Bearer %s", "param": "%s", "code": "%s", "type": "x"}}' % (
        (TOKEN.encode(),) * 3
    )
    error = UpstreamError(UpstreamError.STATUS, status=400, body=body, headers={"retry-after": TOKEN})
    api_error = errors.from_exception(error, "team", TOKEN)
    assert TOKEN not in repr(api_error.body()) + repr(api_error.headers)
    assert api_error.code is None and api_error.param == "***"
    assert api_error.message == "bad: Bearer ***"


def test_a_log_line_of_a_task_calling_with_a_token_leaves_without_it():
    record = logging.LogRecord(
        "httpcore", logging.DEBUG, "", 0, "headers %s", ([(b"retry-after", TOKEN)],), None
    )

    def logged() -> str:
        scrub.in_use(TOKEN)
        scrub.LogFilter().filter(record)
        return record.getMessage()

    assert TOKEN not in contextvars.copy_context().run(logged)
    other = logging.LogRecord("x", logging.INFO, "", 0, "%s", (TOKEN,), None)
    assert scrub.LogFilter().filter(other) and other.getMessage() == TOKEN  # another task's token


async def test_an_answer_read_for_a_request_comes_without_its_token():
    exchange = Exchange(request_id="r", endpoint="embeddings", caller=caller(upstream_token=TOKEN))
    response = httpx.Response(200, content=f'{{"text": "heard {TOKEN}"}}'.encode())
    assert await exchange.read(response, upstream.deadline()) == b'{"text": "heard ***"}'
