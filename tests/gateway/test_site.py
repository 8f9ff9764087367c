"""The probes, the index, CORS, logging and the admin's static files (gateway.views)."""

import logging

import pytest
from django.conf import settings
from django.db import connection, connections

from gateway import views


@pytest.mark.django_db
async def test_health_is_ok_when_the_database_answers(anonymous_client, hf):
    response = await anonymous_client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["redis"] == ("ok" if settings.REDIS_URL else "off")  # off: no REDIS_URL
    assert not hf.calls  # never spends tokens


@pytest.mark.django_db
async def test_health_is_degraded_but_200_when_redis_does_not_answer(anonymous_client, settings):
    from tests.support.processes import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    for _ in range(2):  # the second time without trying: it failed moments ago
        response = await anonymous_client.get("/health")
        assert response.status_code == 200
        answer = response.json()
        assert {k: answer[k] for k in ("status", "database", "redis")} == {
            "status": "degraded",
            "database": "ok",
            "redis": "unavailable",
        }


async def test_health_is_503_when_the_database_does_not(anonymous_client, monkeypatch):
    def broken_cursor(self):
        raise connection.Database.OperationalError("connection refused")

    # The class, not the thread-local proxy: the check runs in another thread.
    monkeypatch.setattr(type(connections["default"]), "cursor", broken_cursor)
    response = await anonymous_client.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


@pytest.mark.django_db
async def test_health_runs_on_the_api_paths_database_threads(anonymous_client, monkeypatch):
    """Not on asgiref's one shared thread, where the usage writer's batches would hold it up; and
    while the database is known to be down (offloop's breaker open) it says so at once."""
    import threading
    import time

    from accounts import offloop

    seen = []
    answers = views._database_answers
    monkeypatch.setattr(
        views, "_database_answers", lambda: seen.append(threading.current_thread().name) or answers()
    )
    assert (await anonymous_client.get("/health")).status_code == 200
    assert seen and seen[0].startswith("hfproxy-db")

    monkeypatch.setattr(offloop._breaker, "down_until", time.monotonic() + 60)
    response = await anonymous_client.get("/health")
    assert response.status_code == 503 and len(seen) == 1  # not even tried


async def test_index_describes_the_service(anonymous_client):
    response = await anonymous_client.get("/")
    data = response.json()
    assert data["service"] == "hfproxy"
    assert data["default_model"] == settings.DEFAULT_MODEL
    assert data["endpoints"]["chat_completions"] == "POST /v1/chat/completions"


async def test_cors_preflight_is_answered(async_client):
    response = await async_client.options(
        "/v1/chat/completions",
        headers={"origin": "https://app.example", "access-control-request-method": "POST"},
    )
    assert response.status_code == 200
    assert response["access-control-allow-origin"] == "*"
    assert "authorization" in response["access-control-allow-headers"]


async def test_cors_is_limited_to_configured_origins(anonymous_client, settings):
    settings.CORS_ALLOW_ALL_ORIGINS = False
    settings.CORS_ALLOWED_ORIGINS = ["https://allowed.example"]
    allowed = await anonymous_client.get("/v1/models", headers={"origin": "https://allowed.example"})
    other = await anonymous_client.get("/v1/models", headers={"origin": "https://other.example"})
    assert allowed["access-control-allow-origin"] == "https://allowed.example"
    assert "access-control-allow-origin" not in other


@pytest.mark.django_db  # the login page lists the sign-in providers, which may be in the database
@pytest.mark.parametrize("path", ["/", "/health", "/metrics", "/admin/login/"])
async def test_cors_is_for_the_apis_only(anonymous_client, path):
    response = await anonymous_client.get(path, headers={"origin": "https://app.example"})
    assert "access-control-allow-origin" not in response


def test_index_and_health_are_async_views():
    import asyncio

    assert asyncio.iscoroutinefunction(views.index)
    assert asyncio.iscoroutinefunction(views.health)
    assert asyncio.iscoroutinefunction(views.chat_completions)


async def test_api_errors_are_not_logged_twice(async_client, hf, caplog):
    hf.post("/chat/completions").respond(503, text="down")
    with caplog.at_level(logging.INFO):
        for payload in ({"messages": []}, {"messages": [{"role": "user", "content": "hi"}]}):
            await async_client.post("/v1/chat/completions", payload, content_type="application/json")
    names = [r.name for r in caplog.records]
    assert names.count("hfproxy.requests") == 2
    assert "django.request" not in names


async def test_the_log_line_has_the_request_id_and_never_the_token(async_client, hf, caplog):
    hf.post("/chat/completions").respond(401, json={"error": f"Invalid token {settings.HF_TOKEN}"})
    with caplog.at_level(logging.DEBUG):
        response = await async_client.post(
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}]},
            content_type="application/json",
            headers={"x-request-id": "trace-123"},
        )
    assert response.status_code == 502
    assert settings.HF_TOKEN not in response.content.decode()
    [line] = [r.getMessage() for r in caplog.records if r.name == "hfproxy.requests"]
    assert "request_id=trace-123" in line and "status=502" in line
    assert all(settings.HF_TOKEN not in r.getMessage() for r in caplog.records)


async def test_the_admin_has_its_styles(anonymous_client):
    response = await anonymous_client.get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert "text/css" in response["content-type"]
