"""The compose stack's front server for real: nginx with deploy/nginx.conf in front of a real
`serve`, as docker-compose.yml wires them (where nginx is installed). Half-sent and dribbled
headers are closed by nginx, a huge header is refused, streams go out unbuffered, and hfproxy sees
the address nginx saw, never one the client wrote. What nginx refuses itself (a huge header or
body, a garbled request, the proxy down) is an error in the API's JSON format, as the SDKs read it."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from types import SimpleNamespace

import httpx
import openai
import pytest

from tests.support.harness import chat, scratch_proxy
from tests.support.nginx import nginx
from tests.support.processes import ROOT, free_port
from tests.support.slowclients import HALF_HEADER, connect_raw, still_open

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")

# nginx's client_header_timeout in deploy/nginx.conf.
NGINX_HEADER_TIMEOUT = 10
CLIENT, OTHER = "127.0.0.2", "127.0.0.3"  # loopback addresses of their own, to tell clients apart


@pytest.fixture(scope="module")
def backend(router, tmp_path_factory):
    settings = {"FORWARDED_ALLOW_IPS": "127.0.0.1", "METRICS_ALLOWED_IPS": CLIENT}
    with scratch_proxy(router, tmp_path_factory.mktemp("front"), **settings) as proxy:
        yield proxy


@contextlib.contextmanager
def _nginx(folder, upstream: str):
    """nginx on a local port with deploy/nginx.conf, `web:8000` being `upstream`; its URL."""
    port = free_port()
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    site = site.replace("server web:8000;", f"server {upstream};")
    (folder / "default.conf").write_text(site)
    with nginx(folder, port, f"  include {folder}/default.conf;\n") as url:
        yield url


@pytest.fixture(scope="module")
def front(backend, tmp_path_factory):
    """nginx in front of the proxy under test."""
    with _nginx(tmp_path_factory.mktemp("nginx"), backend.url.removeprefix("http://")) as url:
        yield SimpleNamespace(url=url)


@pytest.fixture(scope="module")
def front_of_nothing(tmp_path_factory):
    """nginx in front of a proxy that is down (restarting): nothing listens on its port."""
    with _nginx(tmp_path_factory.mktemp("nginx-alone"), f"127.0.0.1:{free_port()}") as url:
        yield SimpleNamespace(url=url)


def _client(url: str, key: str = "hfp_none") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def _get(url: str, source: str, **headers: str) -> httpx.Response:
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=10) as client:
        return client.get(url, headers=headers)


def test_hfproxy_sees_the_address_nginx_saw_and_not_the_clients_claim(front, backend):
    assert _get(front.url + "/metrics", CLIENT).status_code == 200
    assert _get(front.url + "/metrics", OTHER, **{"X-Forwarded-For": CLIENT}).status_code == 403
    assert (
        _get(front.url + "/metrics", OTHER, **{"X-Real-IP": CLIENT, "Forwarded": f"for={CLIENT}"}).status_code
        == 403
    )
    assert _get(backend.url + "/metrics", OTHER, **{"X-Forwarded-For": CLIENT}).status_code == 403


def test_half_sent_and_dribbled_headers_are_closed_by_nginx(front):
    half = [connect_raw(front, HALF_HEADER) for _ in range(50)]
    dribbled = [connect_raw(front, b"GET /health HTTP/1.1\r\n") for _ in range(10)]
    assert all(half) and all(dribbled)
    assert httpx.get(front.url + "/health").status_code == 200
    assert still_open(half + dribbled, NGINX_HEADER_TIMEOUT + 10, dribble=b"X-Slow: 1\r\n") == 0


def test_a_huge_header_is_refused_by_nginx(front):
    answer = httpx.get(front.url + "/health", headers={"X-Big": "a" * (1024 * 1024)})
    assert answer.status_code in (400, 414, 431)
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["error"]["code"] == "request_headers_too_large"


def test_an_oversized_body_is_refused_by_nginx_in_the_apis_format(front, backend):
    from hfproxy_site import settings

    big = chat("openai/gpt-oss-120b:fireworks-ai")
    big["messages"][0]["content"] = "a" * settings.MAX_REQUEST_BYTES
    with pytest.raises(openai.APIStatusError) as refused:
        _client(front.url, backend.keys["canary"]).chat.completions.create(**big)
    error = refused.value
    assert error.status_code == 413 and error.response.headers["content-type"] == "application/json"
    assert error.code == "request_too_large" and error.type == "invalid_request_error"
    assert f"limit of {settings.MAX_REQUEST_BYTES} bytes" in error.message


def test_a_request_line_nginx_cannot_parse_gets_the_apis_format(front):
    answer = b""
    with connect_raw(front, b"GARBAGE\r\n\r\n") as connection:
        while chunk := connection.recv(4096):  # nginx closes it after its answer
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"Content-Type: application/json" in head
    assert json.loads(body)["error"]["type"] == "invalid_request_error"


def test_the_proxy_down_is_an_error_in_the_apis_format(front_of_nothing):
    with pytest.raises(openai.APIStatusError) as refused:
        _client(front_of_nothing.url).chat.completions.create(**chat("openai/gpt-oss-120b"))
    error = refused.value
    assert error.status_code == 502 and error.response.headers["retry-after"] == "5"
    assert error.code == "proxy_unavailable" and error.type == "server_error"
    assert "not answering" in error.message
    # The API's routes and any other: nginx's own pages are never HTML.
    for path in ("/health", "/.errors/proxy_unavailable", "/admin/"):
        answer = httpx.get(front_of_nothing.url + path)
        assert answer.status_code in (404, 502) and answer.headers["content-type"] == "application/json"


def test_a_stream_goes_out_event_by_event(front, backend):
    arrivals = []
    with (
        httpx.Client(timeout=15) as client,
        client.stream(
            "POST",
            front.url + "/v1/chat/completions",
            json=chat("fault/drip", stream=True),
            headers=backend.auth(),
        ) as response,
    ):
        assert response.status_code == 200
        for _ in response.iter_raw():
            arrivals.append(time.monotonic())
    # The drip lasts REQUEST_TIMEOUT (3 s); buffered, it would all arrive at its end.
    assert len(arrivals) > 3 and arrivals[-1] - arrivals[0] > 1
