"""Forwarded addresses and CORS: a forged X-Forwarded-For does not get a client into
METRICS_ALLOWED_IPS (uvicorn believes nobody's unless FORWARDED_ALLOW_IPS says so), and only the
APIs answer other origins; the admin, the index and the probes do not."""

from __future__ import annotations

import httpx
import pytest

from tests.support.harness import scratch_proxy

ORIGIN = {"Origin": "https://elsewhere.example"}


@pytest.fixture(scope="module")
def guarded(router, tmp_path_factory):
    """A proxy whose /metrics admits one network, which the tests' 127.0.0.1 is not in."""
    with scratch_proxy(
        router, tmp_path_factory.mktemp("forwarding"), METRICS_ALLOWED_IPS="10.0.0.0/8"
    ) as proxy:
        yield proxy


@pytest.mark.parametrize("header", ["X-Forwarded-For", "X-Real-IP", "Forwarded"])
def test_a_forged_forwarded_address_does_not_open_the_metrics(guarded, header):
    value = "for=10.1.2.3" if header == "Forwarded" else "10.1.2.3"
    assert httpx.get(guarded.url + "/metrics", headers={header: value}).status_code == 403
    assert httpx.get(guarded.url + "/metrics").status_code == 403


@pytest.mark.parametrize("path", ["/metrics", "/health", "/admin/login/", "/"])
def test_the_site_and_the_probes_do_not_answer_other_origins(guarded, path):
    response = httpx.get(guarded.url + path, headers=ORIGIN)
    assert response.status_code < 500
    assert "access-control-allow-origin" not in response.headers, path


def test_the_apis_still_answer_other_origins(guarded):
    models = httpx.get(guarded.api + "/models", headers={**ORIGIN, **guarded.auth()})
    assert models.status_code == 200 and models.headers["access-control-allow-origin"] == "*"
    preflight = httpx.options(
        guarded.api + "/chat/completions",
        headers={
            **ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "*"
    me = httpx.get(guarded.url + "/api/me", headers={**ORIGIN, **guarded.auth()})
    assert me.status_code == 200 and me.headers["access-control-allow-origin"] == "*"
