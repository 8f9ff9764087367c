"""Health, index, CORS, the admin's middleware, and what runs on the API path."""

import logging

import pytest
from django.conf import settings
from django.db import connection, connections

from gateway import views
from tests.conftest import completion


@pytest.mark.django_db
async def test_health_is_ok_when_the_database_answers(anonymous_client, hf):
    response = await anonymous_client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert not hf.calls  # never spends tokens


@pytest.mark.django_db
async def test_health_answers_under_any_host(anonymous_client, settings):
    """Docker's HEALTHCHECK and load balancers probe by address, not by the public name."""
    settings.ALLOWED_HOSTS = ["proxy.example.com"]
    assert (await anonymous_client.get("/health", headers={"host": "10.0.0.7:8000"})).status_code == 200
    assert (await anonymous_client.get("/admin/login/", headers={"host": "10.0.0.7:8000"})).status_code == 400
    assert (await anonymous_client.get("/v1/models", headers={"host": "10.0.0.7:8000"})).status_code == 400


async def test_health_is_503_when_the_database_does_not(anonymous_client, monkeypatch):
    def broken_cursor(self):
        raise connection.Database.OperationalError("connection refused")

    # The class, not the thread-local proxy: the check runs in another thread.
    monkeypatch.setattr(type(connections["default"]), "cursor", broken_cursor)
    response = await anonymous_client.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


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
    allowed = await anonymous_client.get("/", headers={"origin": "https://allowed.example"})
    other = await anonymous_client.get("/", headers={"origin": "https://other.example"})
    assert allowed["access-control-allow-origin"] == "https://allowed.example"
    assert "access-control-allow-origin" not in other


@pytest.mark.django_db
def test_the_admin_still_has_sessions_and_csrf(client):
    page = client.get("/admin/login/")
    assert page.status_code == 200
    assert "csrftoken" in page.cookies
    csrf_client = type(client)(enforce_csrf_checks=True)
    refused = csrf_client.post("/admin/login/", {"username": "a", "password": "b"})
    assert refused.status_code == 403


async def test_api_requests_skip_the_site_middleware(async_client, hf, caplog, settings):
    settings.DEBUG = True  # Django logs middleware adaptation only in debug mode
    hf.post("/chat/completions").respond(200, json=completion())
    with caplog.at_level(logging.DEBUG, logger="django.request"):
        response = await async_client.post(
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}]},
            content_type="application/json",
        )
    assert response.status_code == 200
    assert not response.cookies  # no session, no CSRF cookie
    assert "X-Frame-Options" not in response  # not even the clickjacking header
    assert not [r for r in caplog.records if "adapted" in r.getMessage()]


def test_no_middleware_on_the_api_path_is_sync_only():
    from django.utils.module_loading import import_string

    for path in settings.MIDDLEWARE:
        middleware = import_string(path)
        assert getattr(middleware, "async_capable", False), path


def test_index_and_health_are_async_views():
    import asyncio

    assert asyncio.iscoroutinefunction(views.index)
    assert asyncio.iscoroutinefunction(views.health)
    assert asyncio.iscoroutinefunction(views.chat_completions)


async def test_admin_paths_keep_django_pages(anonymous_client):
    response = await anonymous_client.get("/admin-nope/")
    assert response.status_code == 404
    assert response["content-type"].startswith("text/html")


async def test_api_errors_are_not_logged_twice(async_client, hf, caplog):
    hf.post("/chat/completions").respond(503, text="down")
    with caplog.at_level(logging.INFO):
        for payload in ({"messages": []}, {"messages": [{"role": "user", "content": "hi"}]}):
            await async_client.post("/v1/chat/completions", payload, content_type="application/json")
    names = [r.name for r in caplog.records]
    assert names.count("hfproxy.requests") == 2
    assert "django.request" not in names


async def test_api_paths_refuse_hosts_not_allowed(async_client, hf, settings):
    settings.ALLOWED_HOSTS = ["proxy.example"]
    route = hf.post("/chat/completions").respond(200, json=completion())
    response = await async_client.post(
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}]},
        content_type="application/json",
        headers={"host": "evil.example"},
    )
    assert response.status_code == 400
    assert "evil.example" in response.json()["error"]["message"]
    assert not route.called


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
