"""The ASGI layer (gateway.asgi): body limit on the bytes received, lifespan and shutdown."""

import gc
import json
import weakref

import pytest

from gateway import upstream
from gateway.asgi import GatewayASGI
from tests.support.answers import completion
from tests.support.asgi import asgi_request
from tests.support.clients import bearer

URL = "/v1/chat/completions"


@pytest.fixture(autouse=True)
def gc_as_it_was():
    """A lifespan startup tunes this process's GC: the next tests get it back as it was."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


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


class Cycle:
    itself = None


async def test_startup_freezes_the_apps_objects_out_of_the_gcs_walks(monkeypatch):
    from gateway import asgi

    monkeypatch.setattr(asgi, "_die_with_parent", lambda: None)
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive():
        return messages.pop(0)

    async def send(message):
        if message["type"] == "lifespan.startup.complete":
            # What exists at startup (the app, its modules) is no longer walked by collections;
            # what comes after is collected as before.
            assert gc.get_freeze_count() > 1000
            cycle = Cycle()
            cycle.itself, gone = cycle, weakref.ref(cycle)  # only the GC frees a cycle
            del cycle
            gc.collect()
            assert gone() is None

    await GatewayASGI(None)({"type": "lifespan"}, receive, send)


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


async def test_a_body_too_large_for_the_messages_api_is_refused_in_anthropic_s_shape(settings):
    settings.MAX_REQUEST_BYTES = 10
    from gateway.asgi import GatewayASGI

    sent = []

    async def app(scope, receive, send):  # never reached
        raise AssertionError

    async def receive():
        return {"type": "http.request", "body": b"x" * 100, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/messages",
        "headers": [(b"content-length", b"100"), (b"x-api-key", b"k")],
    }
    await GatewayASGI(app)(scope, receive, send)
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["type"] == "request_too_large"
