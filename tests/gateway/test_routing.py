"""Which stack serves a request (gateway.routing): the API's handler for API paths and the
probes, Django's own handler, with MIDDLEWARE, for the rest."""

import json
import logging

import pytest
from django.test import RequestFactory
from django.urls import get_resolver

from gateway.routing import Router, for_api_handler
from tests.support.answers import completion
from tests.support.asgi import asgi_request
from tests.support.clients import bearer


def scope(path: str, root_path: str = "") -> dict:
    return {"type": "http", "path": root_path + path, "root_path": root_path}


@pytest.mark.parametrize("path", ["/v1", "/v1/", "/v1/chat/completions", "/v1/nope/x", "/health", "/metrics"])
def test_the_api_and_the_probes_go_to_the_api_handler(path):
    assert for_api_handler(scope(path))
    assert for_api_handler(scope(path, root_path="/proxy"))  # behind a path-prefixing proxy


@pytest.mark.parametrize(
    "path", ["/", "/admin/login/", "/api/me", "/static/admin/css/base.css", "/v1x", "/health/"]
)
def test_the_rest_goes_to_djangos_handler(path):
    assert not for_api_handler(scope(path))


async def test_the_router_sends_each_request_to_one_app():
    seen = []

    def app(name):
        async def serve(scope, receive, send):
            seen.append((name, scope["type"]))

        return serve

    router = Router(api=app("api"), site=app("site"))
    for request in (scope("/v1/models"), scope("/admin/"), {"type": "websocket", "path": "/v1/models"}):
        await router(request, None, None)
    assert seen == [("api", "http"), ("site", "http"), ("site", "websocket")]


@pytest.mark.django_db
async def test_a_site_path_gets_djangos_middleware():
    """Through the real application: sessions and CSRF (the login form's cookie), the security
    and clickjacking headers."""
    result = await asgi_request("GET", "/admin/login/")
    assert result.status == 200
    assert "csrftoken=" in result.headers["set-cookie"]
    assert result.headers["x-frame-options"] == "DENY"
    assert result.headers["x-content-type-options"] == "nosniff"
    assert "x-request-id" in result.headers  # and the middleware both stacks share


async def test_an_api_path_gets_none_of_it(hf, api_key):
    hf.post("/chat/completions").respond(200, json=completion())
    body = b'{"messages": [{"role": "user", "content": "hi"}]}'
    result = await asgi_request("POST", "/v1/chat/completions", body, headers=bearer(api_key))
    assert result.status == 200
    assert not {"set-cookie", "x-frame-options", "x-content-type-options"} & set(result.headers)
    assert "x-request-id" in result.headers


@pytest.mark.django_db
async def test_only_the_site_is_redirected_to_https(anonymous_client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert (await anonymous_client.get("/admin/login/")).status_code == 301
    assert (await anonymous_client.get("/health")).status_code == 200
    # A POST redirected would come back as a GET: the API answers (here, that a key is missing).
    assert (await anonymous_client.post("/v1/chat/completions")).status_code == 401


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "invalid_request_error"), (403, "permission_error"), (404, "not_found"), (500, "server_error")],
)
def test_the_api_handlers_error_pages_are_openais(status, code):
    request = RequestFactory().get("/v1/whatever")
    handler = get_resolver("gateway.urls").resolve_error_handler(status)
    response = handler(request) if status == 500 else handler(request, Exception("no"))
    assert response.status_code == status
    error = json.loads(response.content)["error"]
    assert code in (error["type"], error["code"])


def test_the_sites_error_pages_are_djangos():
    request = RequestFactory().get("/admin/whatever")
    response = get_resolver("hfproxy_site.urls").resolve_error_handler(500)(request)
    assert response.status_code == 500
    assert response["content-type"].startswith("text/html")


@pytest.mark.django_db
async def test_health_answers_under_any_host(anonymous_client, settings):
    """Docker's HEALTHCHECK and load balancers probe by address, not by the public name."""
    settings.ALLOWED_HOSTS = ["proxy.example.com"]
    assert (await anonymous_client.get("/health", headers={"host": "10.0.0.7:8000"})).status_code == 200
    assert (await anonymous_client.get("/admin/login/", headers={"host": "10.0.0.7:8000"})).status_code == 400
    assert (await anonymous_client.get("/v1/models", headers={"host": "10.0.0.7:8000"})).status_code == 400


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


async def test_admin_paths_keep_django_pages(anonymous_client):
    response = await anonymous_client.get("/admin-nope/")
    assert response.status_code == 404
    assert response["content-type"].startswith("text/html")
