"""The ASGI layer: body limit on the bytes received, lifespan, and the handler's API path."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.core import signals

from gateway import upstream
from gateway.asgi import GatewayASGI
from tests.conftest import asgi_request, bearer, completion, sse_response, standard_stream

URL = "/v1/chat/completions"


def payload(size: int) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": "x" * size}]}).encode()


async def test_it_refuses_a_declared_oversized_body_without_reading_it(hf, api_key, settings, reports):
    settings.MAX_REQUEST_BYTES = 1000
    route = hf.post("/chat/completions").respond(200, json=completion())
    result = await asgi_request(
        "POST",
        URL,
        payload(2000),
        headers={**bearer(api_key), "content-length": "2100", "x-request-id": "big-1"},
    )
    assert result.status == 413
    assert result.json()["error"]["code"] == "request_too_large"
    assert result.headers["x-request-id"] == "big-1"
    assert not route.called and not reports


async def test_it_refuses_an_oversized_chunked_body(hf, api_key, settings):
    settings.MAX_REQUEST_BYTES = 1000
    route = hf.post("/chat/completions").respond(200, json=completion())
    body = payload(3000)
    result = await asgi_request(
        "POST", URL, [body[i : i + 500] for i in range(0, len(body), 500)], headers=bearer(api_key)
    )
    assert result.status == 413
    assert not route.called


async def test_it_refuses_a_body_longer_than_its_content_length_says(hf, api_key, settings):
    settings.MAX_REQUEST_BYTES = 1000
    route = hf.post("/chat/completions").respond(200, json=completion())
    result = await asgi_request(
        "POST", URL, [payload(600), payload(600)], headers={**bearer(api_key), "content-length": "100"}
    )
    assert result.status == 413
    assert not route.called


async def test_it_refuses_a_nonsense_content_length(hf, api_key):
    result = await asgi_request("POST", URL, b"{}", headers={**bearer(api_key), "content-length": "-5"})
    assert result.status == 413


async def test_a_body_under_the_limit_goes_through(hf, api_key, settings):
    settings.MAX_REQUEST_BYTES = 10_000
    hf.post("/chat/completions").respond(200, json=completion())
    body = payload(5000)
    result = await asgi_request(
        "POST", URL, [body[:100], body[100:]], headers={**bearer(api_key), "content-length": str(len(body))}
    )
    assert result.status == 200
    assert result.json()["object"] == "chat.completion"


async def test_the_default_limit_is_ten_mebibytes():
    from hfproxy_site import settings as project_settings

    assert project_settings.MAX_REQUEST_BYTES == 10 * 1024 * 1024


async def test_lifespan_starts_and_closes_the_upstream_client():
    client = upstream.client()
    sent = []
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message["type"])

    async def django_app(scope, receive, send):  # never reached for lifespan
        pytest.fail("lifespan must not reach Django")

    await GatewayASGI(django_app)({"type": "lifespan"}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert client.is_closed


async def test_warm_api_requests_never_leave_the_event_loop(hf, api_key, monkeypatch, settings):
    """Django's handler starts and joins a thread per request (ThreadSensitiveContext +
    sync_to_async for signals and response.close()); ours must neither start a thread nor hand
    work to one, once warm."""
    settings.USAGE_FLUSH_INTERVAL = 60  # the usage writer's batches are not the request's work

    def answer(request):
        if json.loads(request.content).get("stream"):
            return sse_response(standard_stream())[0]
        return httpx.Response(200, json=completion())

    hf.post("/chat/completions").mock(side_effect=answer)
    plain = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
    streamed = json.dumps({"messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()
    for body in (plain, streamed):  # warm: the key lookup (a worker thread), the usage writer
        assert (await asgi_request("POST", URL, body, headers=bearer(api_key))).status == 200

    started, submitted = [], []
    start, submit = threading.Thread.start, ThreadPoolExecutor.submit
    monkeypatch.setattr(threading.Thread, "start", lambda self: (started.append(self.name), start(self)))
    monkeypatch.setattr(
        ThreadPoolExecutor, "submit", lambda self, *a, **k: (submitted.append(a[0]), submit(self, *a, **k))[1]
    )
    for body in (plain, streamed) * 10:
        result = await asgi_request("POST", URL, body, headers=bearer(api_key))
        assert result.status == 200
    assert started == []
    assert submitted == []


async def test_api_requests_still_send_the_request_signals(hf, api_key):
    hf.post("/chat/completions").respond(200, json=completion())
    seen = []

    def started(sender, **kwargs):
        seen.append(("started", threading.current_thread() is threading.main_thread()))

    def finished(sender, **kwargs):
        seen.append(("finished", threading.current_thread() is threading.main_thread()))

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    try:
        body = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
        assert (await asgi_request("POST", URL, body, headers=bearer(api_key))).status == 200
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
    assert seen == [("started", True), ("finished", True)]  # once each, on the event loop


async def test_shutdown_lets_pending_cleanups_finish_before_the_records_are_written(monkeypatch):
    import asyncio

    from accounts import runtime, usage

    order = []

    async def cleanup():  # a stream whose client left, still closing
        await asyncio.sleep(0.1)
        order.append("cleanup")

    async def settle():
        await asyncio.sleep(0.2)
        order.append("settle")

    async def stop(deadline):
        order.append("writer stopped")
        return True

    monkeypatch.setattr(usage.writer, "stop", stop)
    runtime.spawn(cleanup())
    runtime.spawn(settle())
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive():
        return messages.pop(0)

    async def send(message):
        pass

    await GatewayASGI(None)({"type": "lifespan"}, receive, send)
    assert order == ["cleanup", "settle", "writer stopped"]


def test_an_async_request_signal_receiver_sends_every_path_through_djangos_route():
    from gateway.asgi import Handler

    async def receiver(sender, **kwargs):
        pass

    assert Handler().api_route
    signals.request_finished.connect(receiver)
    try:
        assert not Handler().api_route  # Signal.send() cannot call it from the event loop
    finally:
        signals.request_finished.disconnect(receiver)


async def test_a_stream_cut_off_by_the_servers_shutdown_is_still_recorded(hf, api_key, reports):
    """uvicorn cancels requests still running when its graceful-shutdown timeout ends; the
    request must end (and be recorded) then, not be left running until the loop closes."""
    import asyncio

    from hfproxy_site.asgi import application

    response, upstream_stream = sse_response(standard_stream(words=["a"] * 50), delay=0.05)
    hf.post("/chat/completions").mock(return_value=response)
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    received = []
    never, streaming = asyncio.Event(), asyncio.Event()

    async def receive():
        if messages:
            return messages.pop(0)
        await never.wait()  # the client stays

    async def send(message):
        received.append(message)
        if len(received) >= 3:  # headers and a couple of events
            streaming.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": URL,
        "raw_path": URL.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", f"Bearer {api_key}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    served = asyncio.ensure_future(application(scope, receive, send))
    await asyncio.wait_for(streaming.wait(), 5)
    served.cancel()  # what uvicorn does at the end of its graceful-shutdown timeout
    with pytest.raises(asyncio.CancelledError):
        await served
    assert [(r.outcome, r.error_code) for r in reports] == [("proxy_error", "server_shutdown")]
    assert upstream_stream.closed  # the router's stream was closed, not left running
