"""The API's handler (gateway.handler): its own middleware and URLs, nothing in a thread, the
host check, and the view ended with the server. Pins the Django code it overrides."""

import asyncio
import hashlib
import inspect
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.conf import settings
from django.core import signals
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.dispatch import Signal
from django.utils.module_loading import import_string

from gateway.handler import ApiHandler
from tests.support.answers import completion, sse_response, standard_stream
from tests.support.asgi import asgi_request, http_scope
from tests.support.clients import bearer

URL = "/v1/chat/completions"

# The Django code gateway.handler overrides, replaces or relies on, as of Django 5.2.
PINNED = {
    ASGIHandler.__call__: "f756809e9c9308dc",  # ApiHandler.__call__ skips its ThreadSensitiveContext
    ASGIHandler.handle: "98faeb5bef800331",  # ApiHandler.serve is it, on the event loop
    BaseHandler.get_response_async: "ad82c920df0cebbb",  # ApiStack.get_response_async
    BaseHandler.load_middleware: "a1fb7ee5f8586195",  # ApiStack.load_middleware replaces it
    Signal._live_receivers: "0a7af5d851f7fd87",  # tells whether a request signal has async receivers
}


@pytest.mark.parametrize("original", PINNED, ids=lambda f: f.__qualname__)
def test_the_django_code_it_overrides_is_unchanged(original):
    digest = hashlib.sha256(inspect.getsource(original).encode()).hexdigest()[:16]
    assert digest == PINNED[original], (
        f"Django's {original.__qualname__} changed (source hash {digest}, pinned "
        f"{PINNED[original]}): compare it with gateway/handler.py, carry the change over if it "
        "matters there, then update PINNED in this test."
    )


class SyncOnly:
    sync_capable, async_capable = True, False

    def __init__(self, get_response):
        self.get_response = get_response


@pytest.mark.parametrize(
    "middleware",
    ["tests.gateway.test_handler.SyncOnly", "django.contrib.sessions.middleware.SessionMiddleware"],
)
def test_it_refuses_middleware_that_would_run_in_a_thread(settings, middleware):
    settings.API_MIDDLEWARE = [*settings.API_MIDDLEWARE, middleware]
    with pytest.raises(ImproperlyConfigured, match=f"API_MIDDLEWARE: {middleware} must be async-capable"):
        ApiHandler()


def test_its_chain_is_built_from_api_middleware_only(settings):
    settings.API_MIDDLEWARE = []
    handler = ApiHandler()
    assert handler._view_middleware == handler._exception_middleware == []
    assert handler._middleware_chain.__wrapped__ == handler._get_response_async


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


def test_an_async_request_signal_receiver_sends_every_path_through_djangos_route():
    async def receiver(sender, **kwargs):
        pass

    assert ApiHandler().on_loop
    signals.request_finished.connect(receiver)
    try:
        assert not ApiHandler().on_loop  # Signal.send() cannot call it from the event loop
    finally:
        signals.request_finished.disconnect(receiver)


async def test_a_stream_cut_off_by_the_servers_shutdown_is_still_recorded(hf, api_key, reports):
    """uvicorn cancels requests still running when its graceful-shutdown timeout ends; the
    request must end (and be recorded) then, not be left running until the loop closes."""
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

    scope = http_scope("POST", URL, {"authorization": f"Bearer {api_key}"})
    served = asyncio.ensure_future(application(scope, receive, send))
    await asyncio.wait_for(streaming.wait(), 5)
    served.cancel()  # what uvicorn does at the end of its graceful-shutdown timeout
    with pytest.raises(asyncio.CancelledError):
        await served
    assert [(r.outcome, r.error_code) for r in reports] == [("proxy_error", "server_shutdown")]
    assert upstream_stream.closed  # the router's stream was closed, not left running


async def test_a_stream_holds_no_copy_of_its_request_body_of_djangos(hf, api_key):
    """A stream may last minutes and an agent's request carries its whole conversation: once the
    view has returned, Django's copies of the body (its bytes, the file read) are let go."""
    import tracemalloc

    from hfproxy_site.asgi import application

    response, _ = sse_response(standard_stream(words=["a"] * 20), delay=0.05)
    hf.post("/chat/completions").mock(return_value=response)
    conversation = [{"role": "user", "content": "x" * 1000} for _ in range(2000)]
    body = json.dumps({"messages": conversation, "stream": True}).encode()  # 2 MB
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    del conversation
    streaming, done = asyncio.Event(), asyncio.Event()
    sent = 0

    async def receive():
        if messages:
            return messages.pop(0)
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        nonlocal sent
        sent += 1
        if sent == 3:  # the headers and a couple of events: the view has long returned
            streaming.set()
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    scope = http_scope("POST", URL, {"authorization": f"Bearer {api_key}"})
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        served = asyncio.ensure_future(application(scope, receive, send))
        await asyncio.wait_for(streaming.wait(), 5)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    await asyncio.wait_for(served, 10)
    # The body sent to the router (rewritten, held for the one retry and the prompt's estimate)
    # is one copy; Django's two more were another 4 MB.
    assert held < 1.5 * len(body), f"{held / len(body):.1f} times the body held mid-stream"


def test_no_middleware_on_the_api_path_is_sync_only():
    for path in settings.API_MIDDLEWARE:
        middleware = import_string(path)
        assert getattr(middleware, "async_capable", False), path


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


async def test_an_unknown_api_path_under_a_host_not_allowed_is_refused_too(anonymous_client, settings):
    settings.ALLOWED_HOSTS = ["proxy.example"]
    response = await anonymous_client.get("/v1/nope", headers={"host": "evil.example"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_api_errors_are_in_openais_shape(anonymous_client):
    response = await anonymous_client.get("/v1/nope/nothing")
    assert response.status_code == 404
    assert response.json()["error"] == {
        "message": "Unknown path: /v1/nope/nothing",
        "type": "invalid_request_error",
        "param": None,
        "code": "not_found",
    }
