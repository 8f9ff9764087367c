"""The compose stack's front server for real: nginx with deploy/nginx.conf in front of a real
`serve`, as docker-compose.yml wires them (where nginx is installed). Half-sent and dribbled
headers are closed by nginx, a huge header is refused, streams go out unbuffered, and hfproxy sees
the address nginx saw, never one the client wrote."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from types import SimpleNamespace

import httpx
import pytest

from tests.support.harness import chat, scratch_proxy
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


@pytest.fixture(scope="module")
def front(backend, tmp_path_factory):
    """nginx on a local port with deploy/nginx.conf, `web:8000` being the proxy under test."""
    folder = tmp_path_factory.mktemp("nginx")
    port = free_port()
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    site = site.replace("server web:8000;", f"server {backend.url.removeprefix('http://')};")
    (folder / "default.conf").write_text(site)
    user = "user root;\n" if os.geteuid() == 0 else ""  # its workers write the temporary files
    (folder / "nginx.conf").write_text(
        f"{user}daemon off;\npid {folder}/nginx.pid;\nerror_log {folder}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {folder}/body;\n"
        f"  proxy_temp_path {folder}/proxy;\n  include {folder}/default.conf;\n}}\n"
    )
    process = subprocess.Popen(["nginx", "-c", str(folder / "nginx.conf")], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not come up: {process.stderr.read().decode()}")
            time.sleep(0.1)
        yield SimpleNamespace(url=url)
    finally:
        process.terminate()
        process.wait(10)


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
