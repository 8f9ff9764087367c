from __future__ import annotations

import contextvars
import json
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


def escaped(value: str) -> str:
    """`value` as a JSON encoder may spell it: every character a `\\u` escape."""
    return "".join(f"\\u{ord(character):04x}" for character in value)


def test_it_scrubs_the_token_spelled_as_json_strings_spell_it():
    token = 'hf_Quote"Back\\slash/Canary9'
    secrets = scrub.secrets_of(token)
    for spelled in (
        json.dumps(token),
        json.dumps(token).replace("/", "\\/"),
        json.dumps(token, ensure_ascii=True),
    ):
        body = json.dumps({"a": "x"})[:-1].encode() + b', "echo": ' + spelled.encode() + b"}"
        assert json.loads(scrub.raw(body, secrets)) == {"a": "x", "echo": "***"}, spelled


def test_it_scrubs_the_token_spelled_with_unicode_escapes():
    token = "hf_abcdefghijklmnop"
    secrets = scrub.secrets_of(token)
    for spelled in (
        escaped(token),
        "\\u0068f_abcdefghijklmnop",
        escaped(token[3:]),
        token[:5] + escaped(token[5:]),
    ):
        body = b'{"model": "m", "text": "heard ' + spelled.encode() + b' \\u00e9", "\\u00e9": 1}'
        scrubbed = scrub.raw(body, secrets)
        assert token[3:] not in json.dumps(json.loads(scrubbed), ensure_ascii=False), spelled
        assert json.loads(scrubbed)["text"] in ("heard *** \u00e9", "heard hf_*** \u00e9"), spelled
        assert json.loads(scrubbed)["\u00e9"] == 1


def test_it_keeps_escaped_bytes_without_the_token_as_they_came():
    secrets = scrub.secrets_of("hf_abcdefghijklmnop")
    for data in (
        b'{"text": "caf\\u00e9 \\ud83d\\ude00 a\\/b \\"q\\" \\\\u"}',
        b'data: {"a": "\\u0041"}\n\nevent: x "open\ndata: {"b": "\\ud800"}\n\n',
        b'\x89PNG\r\n\\u"\xff\xfe\\u12"',  # no JSON at all
        b'"' + b'\\"' * 100_000 + b"\\u",  # left open: scanned once, not once per quote
    ):
        assert scrub.raw(data, secrets) == data


def test_it_scrubs_the_token_in_a_json_string_inside_a_json_string():
    token = "hf_abcdefghijklmnop"
    arguments = json.dumps({"key": escaped(token)}).replace("\\\\", "\\")  # {"key": "\u0068…"}
    event = b"data: " + json.dumps({"delta": {"arguments": arguments}}).encode() + b"\n\n"
    scrubbed = scrub.raw(event, scrub.secrets_of(token))
    assert json.loads(json.loads(scrubbed[6:])["delta"]["arguments"]) == {"key": "***"}


def test_it_scrubs_every_event_of_a_stream_without_touching_the_others():
    token = "hf_abcdefghijklmnop"
    plain = b'data: {"text": "caf\\u00e9"}\n\n'
    echoing = b'event: delta\ndata: {"text": "' + escaped(token).encode() + b'"}\n\n'
    assert scrub.raw(plain + echoing + plain, scrub.secrets_of(token)) == (
        plain + b'event: delta\ndata: {"text": "***"}\n\n' + plain
    )


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
