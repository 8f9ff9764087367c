"""Bad input: a 400/405/413 in OpenAI's format and no call upstream; good input, however
unusual, reaches the router intact."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import time

import httpx
import pytest

from tests.support.faults import BAD_BODIES, MESSAGES
from tests.support.harness import MAX_REQUEST_BYTES, TIMEOUTS, chat, request_id, send
from tests.support.processes import manage

CLIENT_BODY_TIMEOUT = float(TIMEOUTS["CLIENT_BODY_TIMEOUT"])


@pytest.mark.parametrize("content", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_bodies_are_400_with_no_upstream_call(proxy, stats, content):
    answer = send(proxy, content=content, headers={"Content-Type": "application/json"})
    assert answer.status == 400, answer.body
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    assert stats()["requests"] == 0
    record = proxy.record(answer.request_id)
    assert (record["status"], record["outcome"]) == (400, "bad_request")


def test_nesting_near_the_parsers_limit_is_never_a_500(proxy):
    # Parsed, then measured and (streaming: include_usage added) written back.
    for depth in range(400, 1000, 60):
        nested = "[" * depth + "]" * depth
        content = f'{{"stream": true, "messages": [{{"role": "user", "content": {nested}}}]}}'.encode()
        answer = send(proxy, content=content, headers={"Content-Type": "application/json"})
        assert answer.status in (200, 400), (depth, answer.body)


def test_the_offending_field_is_named(proxy):
    for field, value in (
        ("model", 42),
        ("messages", []),
        ("stream", "yes"),
        ("max_tokens", "10"),
        ("temperature", "hot"),
    ):
        answer = send(proxy, {"model": "m", "messages": MESSAGES, field: value})
        assert answer.json()["error"]["param"] == field


def test_a_number_too_large_for_a_float_is_named(proxy, stats):
    content = b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 1e309}'
    answer = send(proxy, content=content, headers={"Content-Type": "application/json"})
    assert answer.status == 400
    assert answer.json()["error"]["param"] == "temperature"
    assert stats()["requests"] == 0


ALLOWED = "openai/gpt-oss-120b:fireworks-ai"
FORBIDDEN = "meta-llama/Llama-3.1-8B-Instruct:cerebras"


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/chat/completions", '"messages": [{"role": "user", "content": "x"}]'),
        ("/responses", '"input": "x"'),
        ("/messages", '"max_tokens": 8, "messages": [{"role": "user", "content": "x"}]'),
    ],
)
@pytest.mark.parametrize("order", [(FORBIDDEN, ALLOWED), (ALLOWED, FORBIDDEN)], ids=["last", "first"])
def test_a_second_model_key_cannot_pass_the_allow_list(proxy, stats, path, fields, order):
    if "narrow" not in proxy.keys:
        created = manage("create_api_key", "narrow", "--models", ALLOWED, env=proxy.env)
        proxy.keys["narrow"] = created.splitlines()[-1]
    content = f'{{"model": "{order[0]}", {fields}, "model": "{order[1]}"}}'.encode()
    answer = send(
        proxy, key="narrow", path=path, content=content, headers={"Content-Type": "application/json"}
    )
    assert answer.status == 400, answer.body
    error = answer.json()
    if path == "/messages":  # in Anthropic's shape
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    else:
        assert error["error"]["type"] == "invalid_request_error"
    assert "more than once" in answer.body.decode()
    assert stats()["requests"] == 0


def _raw(proxy, head: str, body: bytes = b"", *, read_after: float = 5) -> tuple[int, bytes]:
    """Send bytes as they are (a lying Content-Length, chunked encoding): the status and body
    of the answer, (0, b"") when none came within `read_after` seconds."""
    host, port = proxy.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_after) as connection:
        connection.sendall(head.encode() + body)
        response = http.client.HTTPResponse(connection)
        try:
            response.begin()
            return response.status, response.read()
        except (TimeoutError, http.client.HTTPException, ConnectionError):
            return 0, b""


def _head(proxy, rid: str, extra: str) -> str:
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Authorization: Bearer {proxy.keys['canary']}\r\nX-Request-Id: {rid}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    )


def _too_big() -> bytes:
    padding = "x" * (MAX_REQUEST_BYTES + 1000)
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": padding}]}).encode()


def test_a_body_over_the_limit_is_413_with_content_length(proxy, stats):
    answer = send(proxy, content=_too_big(), headers={"Content-Type": "application/json"})
    assert answer.status == 413
    assert answer.json()["error"]["code"] == "request_too_large"
    assert stats()["requests"] == 0


def test_a_body_over_the_limit_is_413_when_chunked(proxy, stats):
    body, rid = _too_big(), request_id()
    chunked = (
        b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:100_000], body[100_000:]))
        + b"0\r\n\r\n"
    )
    status, payload = _raw(proxy, _head(proxy, rid, "Transfer-Encoding: chunked\r\n"), chunked)
    assert status == 413
    assert json.loads(payload)["error"]["code"] == "request_too_large"
    assert stats()["requests"] == 0


def test_a_content_length_that_lies_low_is_refused(proxy, stats):
    # Says 10 bytes, sends a whole request: only 10 bytes are read, which are not a request.
    body, rid = json.dumps(chat("m")).encode(), request_id()
    status, payload = _raw(proxy, _head(proxy, rid, "Content-Length: 10\r\n"), body)
    assert status == 400
    assert json.loads(payload)["error"]["type"] == "invalid_request_error"
    assert stats()["requests"] == 0


def test_a_body_that_stops_coming_is_408_at_the_body_timeout(proxy, stats):
    # Says more than it sends: the server must not hold the request open forever, nor call
    # the router with half a body.
    body, rid = json.dumps(chat("m")).encode(), request_id()
    started = time.monotonic()
    status, payload = _raw(proxy, _head(proxy, rid, f"Content-Length: {len(body) + 100}\r\n"), body)
    assert status == 408
    assert json.loads(payload)["error"]["code"] == "request_timeout"
    assert CLIENT_BODY_TIMEOUT <= time.monotonic() - started < CLIENT_BODY_TIMEOUT + 1
    assert stats()["requests"] == 0


def test_a_content_length_over_the_limit_is_refused_before_the_body(proxy, stats):
    rid = request_id()
    status, payload = _raw(proxy, _head(proxy, rid, f"Content-Length: {MAX_REQUEST_BYTES * 10}\r\n"))
    assert status == 413
    assert json.loads(payload)["error"]["code"] == "request_too_large"
    assert stats()["requests"] == 0


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_wrong_method_is_405(proxy, stats, method):
    answer = send(proxy, method=method)
    assert answer.status == 405
    assert answer.json()["error"]["code"] == "method_not_allowed"
    assert answer.headers["allow"] == "POST"
    assert stats()["requests"] == 0


def test_control_fields_in_the_body_are_never_honoured(proxy, router, stats):
    body = chat(
        "openai/gpt-oss-120b:fireworks-ai",
        api_base="http://127.0.0.1:9/v1",
        base_url="http://127.0.0.1:9/v1",
        api_key="hf_someone_elses_token_123456",
    )
    answer = send(proxy, body)
    assert answer.status == 200
    seen = stats()
    assert seen["requests"] == 1  # it went to our router, not to the smuggled address
    forwarded = json.loads(seen["last_body"])
    assert not {"api_base", "base_url", "api_key"} & set(forwarded)
    assert seen["last_headers"]["authorization"] != "Bearer hf_someone_elses_token_123456"


UNICODE = {
    "emoji": "Hello 👋🏽 🇫🇷 👨‍👩‍👧",
    "RTL": "مرحبا بالعالم שלום עולם",
    "CJK": "你好，世界。こんにちは。안녕하세요",
    "combining": "e\u0301 a\u030a Z\u0351\u0352",
    "200 KB": "字" * 70_000,  # three bytes each in UTF-8
}


@pytest.mark.parametrize("text", UNICODE.values(), ids=UNICODE.keys())
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_unicode_reaches_the_router_intact(proxy, stats, text, stream):
    body = {
        "model": "openai/gpt-oss-120b:fireworks-ai",
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}  # nothing to add: forwarded as sent
    raw = json.dumps(body, ensure_ascii=False).encode()
    answer = send(proxy, content=raw, headers={"Content-Type": "application/json"})
    assert answer.status == 200
    seen = stats()
    assert seen["last_body_sha256"] == hashlib.sha256(raw).hexdigest()  # byte for byte
    assert json.loads(seen["last_body"])["messages"][0]["content"] == text


def test_unicode_survives_when_the_body_is_rewritten(proxy, stats):
    # Streaming without include_usage: the proxy adds it, so the body is re-encoded.
    text = UNICODE["emoji"] + UNICODE["RTL"] + "\u0000 NUL \ud83d escaped lone surrogate"
    answer = send(
        proxy,
        {
            "model": "openai/gpt-oss-120b:fireworks-ai",
            "messages": [{"role": "user", "content": text}],
            "stream": True,
        },
    )
    assert answer.status == 200
    assert json.loads(stats()["last_body"].encode("utf-8", "surrogatepass"))["messages"][0]["content"] == text


def test_nul_bytes_do_not_break_the_usage_record(proxy):
    # NUL in the request id header is refused by HTTP itself; in the content and in the
    # router's answer (fault/nul's model name) it must not stop the record being written.
    body = {"model": "fault/nul", "messages": [{"role": "user", "content": "a\u0000b"}]}
    for stream in (False, True):
        answer = send(proxy, {**body, "stream": stream})
        assert answer.status == 200
        record = proxy.record(answer.request_id)
        assert record["model_answered"] == "fault/nulmodel"


@pytest.mark.parametrize(
    "url",
    [
        "/api/usage?user=bob%00",  # was a 500 on PostgreSQL, which takes no NUL in any text
        "/api/me?user=%00",
        "/admin/accounts/usagerecord/?q=evil%00",
        "/admin/accounts/usagerecord/?model_requested=m%00",
        "/v1/models?after=%00",
        "/v1/models/org%2Fm%00",
    ],
)
def test_a_nul_in_the_url_is_400(proxy, url):
    if "root" not in proxy.keys:  # a superuser's key: ?user= is looked up
        created = manage("create_api_key", "root", env=proxy.env)
        proxy.keys["root"] = created.splitlines()[-1]
        proxy.db.execute(
            "UPDATE auth_user SET is_staff = %s, is_superuser = %s WHERE username = %s", True, True, "root"
        )
    answer = httpx.get(proxy.url + url, headers=proxy.auth("root"))
    assert answer.status_code == 400, (url, answer.status_code, answer.text[:300])
    assert answer.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("cookie", ['sessionid="abcdefgh\\000"', 'csrftoken="x\\000y"'])
def test_a_nul_in_a_cookie_is_400(proxy, cookie):
    # Django unquotes "\000" into a NUL, which PostgreSQL refuses in a session lookup (a 500).
    answer = httpx.get(proxy.url + "/admin/", headers={"Cookie": cookie})
    assert answer.status_code == 400, (cookie, answer.status_code, answer.text[:300])
