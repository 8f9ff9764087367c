"""Authentication: every bad key gets the same 401 and nothing reaches the router; spoofed
headers open nothing; a stopped database is a 503 (never a 401) and service returns with it."""

from __future__ import annotations

import contextlib
import time

import httpx
import pytest

from tests.support.faults import SPOOFED, bad_keys
from tests.support.harness import PrivatePostgres, chat, launch_proxy, send


def test_every_bad_key_gets_the_same_401_and_no_upstream_call(proxy, stats):
    bodies, refused = {}, []
    for name, headers in bad_keys(proxy).items():
        answer = send(proxy, chat("openai/gpt-oss-120b:fireworks-ai"), key=None, headers=headers)
        refused.append(answer.request_id)
        assert answer.status == 401, name
        assert answer.headers["www-authenticate"] == "Bearer", name
        bodies[name] = answer.body
    assert len(set(bodies.values())) == 1, bodies  # nothing tells a guesser which part was wrong
    assert set(httpx.Response(401, content=bodies["missing"]).json()["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }
    assert stats()["requests"] == 0
    # Records are written in order: once a later request's is in, none of these has one.
    proxy.record(send(proxy, {"model": "openai/gpt-oss-120b:fireworks-ai", "messages": []}).request_id)
    assert all(proxy.records(rid) == [] for rid in refused)


def test_spoofed_forwarding_headers_open_nothing(proxy, stats):
    answer = send(proxy, chat("openai/gpt-oss-120b:fireworks-ai"), key=None, headers=SPOOFED)
    assert answer.status == 401
    with httpx.Client(base_url=proxy.url, headers=SPOOFED, follow_redirects=False) as client:
        admin = client.get("/admin/")
        assert admin.status_code == 302 and admin.headers["location"].startswith("/admin/login/")
        assert client.get("/admin/accounts/apikey/").status_code == 302
        assert client.get("/api/me").status_code in (401, 403)
        assert client.get("/api/usage").status_code in (401, 403)
    assert stats()["requests"] == 0


@pytest.mark.parametrize(
    "host", ["evil.example", "127.0.0.1.evil.example", "localhost:8000@evil.example", ""]
)
def test_a_host_not_allowed_is_400_even_with_a_valid_key(proxy, stats, host):
    answer = send(proxy, chat("openai/gpt-oss-120b:fireworks-ai"), headers={"Host": host})
    assert answer.status == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert stats()["requests"] == 0


def test_with_postgresql_stopped_it_is_503_never_401_and_comes_back(router, tmp_path):
    with contextlib.ExitStack() as stack:
        postgres = stack.enter_context(PrivatePostgres.running())
        # A long key cache: a key seen before the outage keeps working through it.
        proxy = launch_proxy(router, postgres.url, tmp_path, AUTH_CACHE_TTL="3600")
        stack.callback(proxy.stop)
        assert send(proxy, chat("openai/gpt-oss-120b:fireworks-ai"), key="team").status == 200

        postgres.stop()
        outage = [
            send(proxy, chat("openai/gpt-oss-120b:fireworks-ai"), key=key)
            for key in ("canary", "revoked", "expired", "canary")
        ]
        print(f"\n503s during the outage took {', '.join(f'{a.seconds:.2f}' for a in outage)} s")
        for answer in outage:
            assert answer.status == 503, answer.body
            assert answer.seconds < 4.5  # DB_POOL_TIMEOUT (3 s) at most, then at once
            assert answer.json()["error"]["code"] == "service_unavailable"
            assert int(answer.headers["retry-after"]) > 0
        assert httpx.get(proxy.url + "/health").status_code == 503
        # known key: served, its record kept for later
        served = send(proxy, chat("openai/gpt-oss-120b:fireworks-ai"), key="team")
        assert served.status == 200

        postgres.start()
        started = time.monotonic()
        while (answer := send(proxy, chat("openai/gpt-oss-120b:fireworks-ai"), key="canary")).status != 200:
            assert answer.status == 503, answer.body
            assert time.monotonic() - started < 10, "still failing 10 s after PostgreSQL came back"
            time.sleep(0.2)
        recovered = time.monotonic() - started
        print(f"\nservice back {recovered:.2f} s after PostgreSQL restarted")
        assert recovered < 5
        assert httpx.get(proxy.url + "/health").status_code == 200
        # Nothing served was lost: the request answered during the outage is recorded, once.
        assert proxy.record(served.request_id, seconds=15)["outcome"] == "ok"
        assert proxy.record(answer.request_id)["outcome"] == "ok"
        assert all(proxy.records(a.request_id) == [] for a in outage)  # never authenticated
