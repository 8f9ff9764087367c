"""The fault suite's scenarios, shared by its files (tests/faults/test_secrets.py runs them all
against a canary): the router's faults and what each must end in, bodies that are not a valid
request, keys that are not a valid key, headers that try to pass for a trusted proxy."""

from __future__ import annotations

import json
from dataclasses import dataclass

from tests.support.harness import TIMEOUTS

READ_TIMEOUT = float(TIMEOUTS["READ_TIMEOUT"])
REQUEST_TIMEOUT = float(TIMEOUTS["REQUEST_TIMEOUT"])


@dataclass(frozen=True)
class Fault:
    model: str
    stream: bool
    status: int  # what the client gets
    outcome: str  # what the record says
    code: str | None  # the error's code (None: no error)
    attempts: int = 1  # calls the router saw
    events: int = 0  # a stream: content events before the error event (-1: some)
    seconds: float = 0  # a timeout: when it must end (READ_TIMEOUT or REQUEST_TIMEOUT)

    @property
    def id(self) -> str:
        return f"{self.model}{' stream' if self.stream else ''}"


FAULTS = [
    Fault("fault/status-500", False, 502, "upstream_error", "upstream_error", attempts=2),
    Fault("fault/status-504-empty", False, 502, "upstream_error", "upstream_error", attempts=2),
    Fault("fault/status-502", True, 502, "upstream_error", "upstream_error", attempts=2),
    # A 503 that says when to come back (Retry-After): not retried, the client is told when.
    Fault("fault/status-503", False, 503, "upstream_error", "upstream_unavailable"),
    Fault("fault/status-503-empty", True, 503, "upstream_error", "upstream_unavailable"),
    Fault("fault/status-400", False, 400, "upstream_error", "400"),
    Fault("fault/status-404-empty", True, 404, "upstream_error", "model_not_found"),
    Fault("fault/status-429", False, 429, "upstream_error", "429"),
    Fault("fault/status-429-empty", True, 429, "upstream_error", "rate_limit_exceeded"),
    Fault("fault/echo-auth-401", False, 502, "upstream_error", "upstream_auth_failed"),
    # Waiting for the headers, and for each chunk: READ_TIMEOUT.
    Fault("fault/hang", False, 504, "timeout", "upstream_timeout", seconds=READ_TIMEOUT),
    Fault("fault/hang", True, 504, "timeout", "upstream_timeout", seconds=READ_TIMEOUT),
    Fault("fault/hang-after-headers", False, 504, "timeout", "upstream_timeout", seconds=READ_TIMEOUT),
    Fault(
        "fault/hang-after-headers", True, 200, "timeout", "upstream_timeout", events=1, seconds=READ_TIMEOUT
    ),
    # Never stalls, never ends: REQUEST_TIMEOUT for the whole exchange.
    Fault("fault/drip", True, 200, "timeout", "upstream_timeout", events=-1, seconds=REQUEST_TIMEOUT),
    Fault("fault/cut", True, 200, "upstream_error", "upstream_bad_response", events=3),
    Fault("fault/break", True, 200, "upstream_error", "upstream_bad_response", events=3),
    Fault("fault/bad-sse", True, 200, "upstream_error", "upstream_bad_response", events=3),
    Fault("fault/not-json", False, 502, "upstream_error", "upstream_bad_response"),
    Fault("fault/not-json", True, 502, "upstream_error", "upstream_bad_response"),
    Fault("fault/redirect", False, 502, "upstream_error", "upstream_bad_response"),
    Fault("fault/redirect", True, 502, "upstream_error", "upstream_bad_response"),
    Fault("fault/no-usage", False, 200, "ok", None),
    Fault("fault/no-usage", True, 200, "ok", None),
    Fault("fault/nul", False, 200, "ok", None),
    Fault("fault/nul", True, 200, "ok", None),
]


MESSAGES = [{"role": "user", "content": "hi"}]

BAD_BODIES = {
    "malformed JSON": b'{"model": "m", "messages": [',
    "not an object": b'[{"model": "m"}]',
    "a string": b'"hello"',
    "empty": b"",
    "NaN": b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
    "invalid UTF-8": b'{"model": "m\xff", "messages": []}',
    "model not a string": json.dumps({"model": 42, "messages": MESSAGES}).encode(),
    "model empty": json.dumps({"model": " ", "messages": MESSAGES}).encode(),
    "model with NUL": json.dumps({"model": "m\u0000x", "messages": MESSAGES}).encode(),
    "messages not a list": json.dumps({"model": "m", "messages": "hi"}).encode(),
    "messages empty": json.dumps({"model": "m", "messages": []}).encode(),
    "message not an object": json.dumps({"model": "m", "messages": ["hi"]}).encode(),
    "message without role": json.dumps({"model": "m", "messages": [{"content": "hi"}]}).encode(),
    "stream not a boolean": json.dumps({"model": "m", "messages": MESSAGES, "stream": "yes"}).encode(),
    "max_tokens not an integer": json.dumps({"model": "m", "messages": MESSAGES, "max_tokens": 1.5}).encode(),
    "max_tokens a string": json.dumps({"model": "m", "messages": MESSAGES, "max_tokens": "10"}).encode(),
    "temperature a string": json.dumps({"model": "m", "messages": MESSAGES, "temperature": "hot"}).encode(),
    "temperature a boolean": json.dumps({"model": "m", "messages": MESSAGES, "temperature": True}).encode(),
    # Which `model` counts would be each parser's guess (the allow-list checks one).
    "a key twice": b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "model": "n"}',
    "a nested key twice": b'{"model": "m", "messages": [{"role": "user", "role": "system", "content": "x"}]}',
    # Too large for a float: would reach the router as `Infinity`, which is not JSON.
    "1e309": b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 1e309}',
    "UTF-16": json.dumps({"model": "m", "messages": MESSAGES}).encode("utf-16"),
    "UTF-16 without a BOM": json.dumps({"model": "m", "messages": MESSAGES}).encode("utf-16-le"),
    "UTF-8 with a BOM": json.dumps({"model": "m", "messages": MESSAGES}).encode("utf-8-sig"),
    "deeply nested": b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


def _digest(proxy, name: str) -> str:
    return proxy.db.query("SELECT digest FROM accounts_apikey WHERE name = %s", name)[0]["digest"]


def bad_keys(proxy) -> dict[str, dict]:
    """Ways to present a key that is not a valid one, each as request headers."""
    digest = _digest(proxy, "canary key")
    return {
        "missing": {},
        "empty bearer": {"Authorization": "Bearer"},
        "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
        "bare key without scheme": {"Authorization": proxy.keys["canary"]},
        "not ours": {"Authorization": "Bearer sk-proj-abcdefghijklmnopqrstuvwxyz"},
        "prefix only": {"Authorization": "Bearer hfp_"},
        "absurdly long": {"Authorization": "Bearer hfp_" + "a" * 10_000},
        "non-ASCII": {"Authorization": "Bearer hfp_ключключключключключ".encode()},
        "unknown": {"Authorization": "Bearer hfp_" + "A" * 43},
        "revoked": {"Authorization": f"Bearer {proxy.keys['revoked']}"},
        "expired": {"Authorization": f"Bearer {proxy.keys['expired']}"},
        "stored digest": {"Authorization": f"Bearer {digest}"},
        "stored digest as a key": {"Authorization": f"Bearer hfp_{digest}"},
        "x-api-key unknown": {"x-api-key": "hfp_" + "B" * 43},
        "one character off": {"Authorization": f"Bearer {proxy.keys['canary'][:-1]}X"},
    }


SPOOFED = {
    "X-Forwarded-For": "127.0.0.1",
    "X-Real-IP": "127.0.0.1",
    "X-Forwarded-Host": "localhost",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-User": "admin",
    "X-Remote-User": "admin",
    "Remote-User": "admin",
    "X-Original-URL": "/admin/",
    "X-Rewrite-URL": "/admin/",
    "X-Api-Key-Valid": "true",
}
