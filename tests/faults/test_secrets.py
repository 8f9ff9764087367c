"""Secrets: run every scenario against a server holding a canary key and a canary Hugging Face
token, at LOG_LEVEL DEBUG and INFO; then neither canary may appear in its logs, the error bodies
it sent, any database column, the admin's pages, or the CSV export. Then a router that quotes
the token it got everywhere it can (tokens of three shapes): it may appear in none of those, nor
in the answers' headers or /metrics."""

from __future__ import annotations

import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.faults import BAD_BODIES, FAULTS, SPOOFED, bad_keys
from tests.support.harness import (
    CANARY_TOKEN,
    Proxy,
    admin_session,
    chat,
    launch_proxy,
    open_request,
    request_id,
    send,
)
from tests.support.processes import manage, scratch_database

ADMIN_PASSWORD = "admin-password-for-the-canary-test"
METRICS_TOKEN = "metrics-token-for-the-canary-test"


def every_scenario(proxy: Proxy) -> list[bytes]:
    """One request of each scenario of the suite (the canary key where a key is valid); the
    bodies the server answered."""
    canary = proxy.keys["canary"]
    jobs = [lambda fault=fault: send(proxy, chat(fault.model, fault.stream)) for fault in FAULTS]
    jobs += [
        lambda content=content: send(proxy, content=content, headers={"Content-Type": "application/json"})
        for content in BAD_BODIES.values()
    ]
    jobs += [
        lambda headers=headers: send(
            proxy, chat("openai/gpt-oss-120b:fireworks-ai"), key=None, headers=headers
        )
        for headers in bad_keys(proxy).values()
    ]
    jobs += [
        lambda: send(proxy, chat("openai/gpt-oss-120b:fireworks-ai"), headers=SPOOFED),
        lambda: send(
            proxy, chat("openai/gpt-oss-120b:fireworks-ai", True, stream_options={"include_usage": True})
        ),
        # The canary token smuggled in the body, the canary key in the other header.
        lambda: send(
            proxy,
            chat("openai/gpt-oss-120b:fireworks-ai", api_key=CANARY_TOKEN, base_url="http://127.0.0.1:9/v1"),
        ),
        lambda: send(
            proxy, chat("openai/gpt-oss-120b:fireworks-ai"), key=None, headers={"x-api-key": canary}
        ),
        lambda: send(proxy, method="GET", path="/models"),
        lambda: send(proxy, method="GET", path="/models/fault%2Fnope"),
        lambda: send(proxy, method="DELETE"),
        lambda: send(proxy, content=b"x" * 400_000, headers={"Content-Type": "application/json"}),
        lambda: _leave(proxy, chat("slow/left", True), after=0.3),
        lambda: _leave(proxy, chat("fault/hang"), after=0.3),
    ]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda job: job(), jobs))
    return [answer.body for answer in answers if answer is not None]


def _leave(proxy: Proxy, body: dict, after: float) -> None:
    with open_request(proxy, body, request_id()):
        time.sleep(after)


def database_text(proxy: Proxy) -> str:
    """Every row of every table, as text."""
    if proxy.db.url.startswith("sqlite"):
        tables = [
            row["name"] for row in proxy.db.query("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
    else:
        tables = [
            row["table_name"]
            for row in proxy.db.query(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        ]
    assert "accounts_usagerecord" in tables and "accounts_huggingfacetoken" in tables
    return "\n".join(repr(row) for table in tables for row in proxy.db.query(f'SELECT * FROM "{table}"'))


def admin_text(proxy: Proxy) -> str:
    """Every admin page a staff member can open about the keys, tokens, users and usage, and
    the usage CSV export."""
    with admin_session(proxy, "root", ADMIN_PASSWORD) as client:
        ids = {
            table: [row["id"] for row in proxy.db.query(f"SELECT id FROM {table}")]
            for table in ("accounts_apikey", "accounts_huggingfacetoken", "auth_user", "accounts_usagerecord")
        }
        urls = [
            "/admin/",
            "/admin/accounts/",
            "/admin/accounts/apikey/",
            "/admin/accounts/huggingfacetoken/",
            "/admin/accounts/usagerecord/",
            "/admin/accounts/usagerecord/?outcome=upstream_error",
            "/admin/accounts/usagerecord/dashboard/",
            "/admin/auth/user/",
            *(f"/admin/accounts/apikey/{pk}/change/" for pk in ids["accounts_apikey"]),
            *(f"/admin/accounts/huggingfacetoken/{pk}/change/" for pk in ids["accounts_huggingfacetoken"]),
            *(f"/admin/auth/user/{pk}/change/" for pk in ids["auth_user"]),
            *(f"/admin/accounts/usagerecord/{pk}/change/" for pk in ids["accounts_usagerecord"][:50]),
        ]
        pages = []
        for url in urls:
            page = client.get(url)
            assert page.status_code == 200, url
            pages.append(page.text)
        export = client.get("/admin/accounts/usagerecord/export/")
        assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
        assert export.text.count("\n") > len(FAULTS)  # the scenarios' records are in it
        pages.append(export.text)
        return "\n".join(pages)


def _superuser(proxy: Proxy) -> None:
    manage(
        "createsuperuser",
        "--noinput",
        "--username",
        "root",
        "--email",
        "root@example.com",
        env={**proxy.env, "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD},
    )


def _leaks(canaries: dict[str, str], places: dict[str, str]) -> list[str]:
    return [
        f"{canary} in {place}"
        for canary, value in canaries.items()
        for place, text in places.items()
        if value in text
    ]


@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
def test_no_canary_leaks_anywhere(router, tmp_path, level):
    with contextlib.ExitStack() as stack:
        database = stack.enter_context(scratch_database(tmp_path))
        proxy = launch_proxy(router, database, tmp_path, LOG_LEVEL=level, SECURE_COOKIES="false")
        stack.callback(proxy.stop)
        _superuser(proxy)
        bodies = every_scenario(proxy)
        # The canary key's own API answers (who am I, my usage) must not echo it either.
        for path in ("/api/me", "/api/usage"):
            answer = httpx.get(proxy.url + path, headers=proxy.auth())
            assert answer.status_code == 200
            bodies.append(answer.content)
        report = manage("usage_report", "--format", "json", env=proxy.env)
        time.sleep(0.5)  # the last records written
        places = {
            "error bodies": b"\n".join(bodies).decode(errors="replace"),
            "database": database_text(proxy),
            "admin pages and CSV": admin_text(proxy),
            "usage_report": report,
        }
        proxy.stop()  # everything it logged, shutdown included
        places["log"] = proxy.log_text()

    assert "hfproxy.requests" in places["log"]  # it did log the requests
    if level == "DEBUG":
        assert " DEBUG " in places["log"]  # and, at DEBUG, the libraries' debug lines
    canaries = {
        "API key": proxy.keys["canary"],
        "API key without its prefix": proxy.keys["canary"].removeprefix("hfp_"),
        "Hugging Face token": CANARY_TOKEN,
        "Hugging Face token without its prefix": CANARY_TOKEN.removeprefix("hf_"),
    }
    leaks = _leaks(canaries, places)
    assert not leaks, leaks


# Hugging Face tokens of four shapes: the usual one; one that is no `hf_…` at all; one that has
# the shape of an error code (lower-case letters and digits), as a router's `code` could be; one
# that every JSON encoder spells otherwise (`\"`, `\\`).
ECHOED_TOKENS = {
    "canary": CANARY_TOKEN,
    "odd": "sk-Odd/Shape+Canary=Tok3n.9f8e7d",
    "lower": "canarylowercase0123456789abcdefgh",
    "quoted": 'sk-Quote"Back\\slash-Canary-5e4d3c',
}
ECHOING = [
    *(
        f"fault/echo-auth-fields-{status}"
        for status in (400, 401, 402, 403, 404, 413, 422, 429, 500, 503, 529)
    ),
    "fault/echo-auth-401",
    "fault/echo-auth-stream",
    "fault/echo-auth-answer",
    "fault/echo-auth-escaped",
]
APIS = {
    "/chat/completions": lambda model, stream: chat(model, stream),
    "/responses": lambda model, stream: {"model": model, "input": "hello there", "stream": stream},
    "/messages": lambda model, stream: {
        "model": model,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": stream,
    },
}


def echoing_router(proxy: Proxy) -> list[str]:
    """Every echoing fault on every API relayed as it came, stream or not, with each token:
    each answer's status, headers and body, as text."""
    jobs = [
        (key, path, model, stream)
        for key in ECHOED_TOKENS
        for path in APIS
        for model in ECHOING
        for stream in (False, True)
    ]

    def run(job) -> str:
        key, path, model, stream = job
        answer = send(proxy, APIS[path](model, stream), key=key, path=path)
        assert answer.status != 500, (job, answer.body)
        body = answer.body.decode(errors="replace")
        return f"{job} {answer.status} {dict(answer.headers)}\n{body}\n{decoded(answer.body)}"

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(run, jobs))


def decoded(body: bytes) -> str:
    """Every string of a JSON body, or of a stream's events, as the client reads it: decoded."""
    documents = [body, *(line[5:] for line in body.splitlines() if line.startswith(b"data:"))]
    strings, pending = [], []
    for document in documents:
        with contextlib.suppress(ValueError):
            pending.append(json.loads(document))
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            strings.append(value)
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, dict):
            pending.extend([*value, *value.values()])
    return "\n".join(strings)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_router_quoting_the_token_leaks_it_nowhere(router, tmp_path, transport):
    with contextlib.ExitStack() as stack:
        database = stack.enter_context(scratch_database(tmp_path))
        proxy = launch_proxy(
            router,
            database,
            tmp_path,
            LOG_LEVEL="DEBUG",
            SECURE_COOKIES="false",
            METRICS_TOKEN=METRICS_TOKEN,
            UPSTREAM_TRANSPORT=transport,  # their debug lines differ
        )
        stack.callback(proxy.stop)
        _superuser(proxy)
        for key, token in ECHOED_TOKENS.items():
            if key != "canary":
                created = manage("create_api_key", key, "--hf-token", token, env=proxy.env)
                proxy.keys[key] = created.splitlines()[-1]
        answers = echoing_router(proxy)
        time.sleep(0.5)  # the last records written
        metrics = httpx.get(proxy.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert metrics.status_code == 200 and "hfproxy_upstream_errors" in metrics.text
        places = {
            "answers": "\n".join(answers),
            "database": database_text(proxy),
            "admin pages and CSV": admin_text(proxy),
            "metrics": metrics.text,
        }
        proxy.stop()
        places["log"] = proxy.log_text()

    canaries = {name: token for name, token in ECHOED_TOKENS.items()}
    canaries["canary without its prefix"] = CANARY_TOKEN.removeprefix("hf_")
    leaking = [answer for answer in answers if any(value in answer for value in canaries.values())]
    leaks = _leaks(canaries, places)
    assert not leaks, (f"{len(leaking)} of {len(answers)} answers leak", leaks)
    assert "Bearer ***" in places["answers"]  # the router did quote the header, scrubbed
