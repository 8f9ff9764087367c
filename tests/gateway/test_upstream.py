"""The upstream client over real sockets, on both transports: what each failure is called."""

import asyncio
import contextvars

import aiohttp
import httpcore
import httpx
import pytest

from gateway import upstream
from gateway.upstream import UpstreamError
from tests.support.processes import free_port


@pytest.fixture(params=["aiohttp", "httpx"])
async def transport(request, settings):
    settings.UPSTREAM_TRANSPORT = request.param
    upstream.reset()
    yield request.param
    await upstream.aclose()


async def serve(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def send(settings, port, path="/chat/completions", stream=False):
    settings.HF_BASE_URL = f"http://127.0.0.1:{port}/v1"
    return await upstream.send(
        "POST", path, token="hf_x", request_id="r1", deadline=upstream.deadline(), body=b"{}", stream=stream
    )


async def test_connection_refused_is_a_connection_error_not_a_timeout(transport, settings):
    with pytest.raises(UpstreamError) as caught:
        await send(settings, free_port())
    assert caught.value.kind == UpstreamError.CONNECTION


async def test_no_headers_in_time_is_a_timeout(transport, settings):
    settings.READ_TIMEOUT = 0.2

    async def silent(reader, writer):
        await asyncio.sleep(5)
        writer.close()

    server, port = await serve(silent)
    async with server:
        with pytest.raises(UpstreamError) as caught:
            await send(settings, port)
    assert caught.value.kind == UpstreamError.TIMEOUT


async def test_a_connection_closed_before_headers_is_a_connection_error(transport, settings):
    async def rude(reader, writer):
        await reader.read(100)
        writer.close()

    server, port = await serve(rude)
    async with server:
        with pytest.raises(UpstreamError) as caught:
            await send(settings, port)
    assert caught.value.kind == UpstreamError.CONNECTION


async def test_a_stream_cut_mid_body_is_stream_cut(transport, settings):
    async def cut(reader, writer):
        await reader.read(1000)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            b"6\r\ndata: \r\n"
        )
        await writer.drain()
        writer.close()

    server, port = await serve(cut)
    async with server:
        response = await send(settings, port, stream=True)
        with pytest.raises(UpstreamError) as caught:
            async for _ in upstream.iter_chunks(response, upstream.deadline()):
                pass
        await response.aclose()
    assert caught.value.kind == UpstreamError.STREAM_CUT


async def test_a_full_pool_is_saturation_and_the_router_sees_nothing(transport, settings):
    settings.UPSTREAM_MAX_CONNECTIONS, settings.CONNECT_TIMEOUT, settings.READ_TIMEOUT = 1, 0.2, 5
    upstream.reset()
    connections = []

    async def streaming(reader, writer):
        connections.append(writer)
        await reader.read(1000)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        await writer.drain()
        await asyncio.sleep(5)

    server, port = await serve(streaming)
    async with server:
        holding = await send(settings, port, stream=True)  # the pool's one connection
        with pytest.raises(UpstreamError) as caught:
            await send(settings, port, stream=True)
        await holding.aclose()
        # Once it is free, the next request gets it.
        await (await send(settings, port, stream=True)).aclose()
    assert caught.value.kind == UpstreamError.SATURATED
    assert len(connections) == 2  # the refused request never reached the router


def test_a_connection_timeout_of_aiohttp_is_saturation_only_while_waiting_for_the_pool():
    slow = raised_from(httpx.ConnectTimeout("x"), aiohttp.ConnectionTimeoutError("slow"))
    assert upstream._kind(slow, UpstreamError.CONNECTION) == UpstreamError.TIMEOUT

    def while_waiting():
        upstream._waiting_for_pool.set(True)
        return upstream._kind(slow, UpstreamError.CONNECTION)

    assert contextvars.copy_context().run(while_waiting) == UpstreamError.SATURATED


async def test_the_client_is_shared_within_a_loop(transport):
    assert upstream.client() is upstream.client()


def raised_from(exc: Exception, cause: BaseException) -> Exception:
    try:
        raise exc from cause
    except Exception as raised:
        return raised


@pytest.mark.parametrize(
    ("error", "is_timeout"),
    [
        # httpx's own transport: httpcore's timeouts are the cause.
        (raised_from(httpx.ReadTimeout("read"), httpcore.ReadTimeout("read")), True),
        (raised_from(httpx.ConnectTimeout("connect"), httpcore.ConnectTimeout("connect")), True),
        (raised_from(httpx.PoolTimeout("pool"), httpcore.PoolTimeout("pool")), True),
        (httpx.ReadTimeout("no cause"), True),
        # httpx-aiohttp calls every aiohttp connection error ConnectTimeout.
        (raised_from(httpx.ConnectTimeout("x"), aiohttp.ServerDisconnectedError()), False),
        (raised_from(httpx.ConnectTimeout("x"), aiohttp.ClientConnectionError("refused")), False),
        (raised_from(httpx.ConnectTimeout("x"), aiohttp.ConnectionTimeoutError("slow")), True),
        (raised_from(httpx.ReadTimeout("x"), aiohttp.SocketTimeoutError("slow")), True),
        (httpx.ConnectError("refused"), False),
    ],
)
def test_what_counts_as_a_timeout(error, is_timeout):
    assert upstream._is_timeout(error) is is_timeout


async def test_a_request_that_never_left_is_sent_on_another_connection(settings):
    # A pooled connection the router closed while idle fails as the body is written (aiohttp:
    # "Can not write request body"): the router saw nothing, so it is no retry.
    seen = []

    def handler(request):
        seen.append(request)
        if len(seen) < upstream.UNSENT_TRIES:
            raise httpx.WriteError("Can not write request body", request=request)
        return httpx.Response(200, json={"ok": True})

    upstream.set_transport(httpx.MockTransport(handler))
    tried = []
    try:
        response = await upstream.send(
            "POST", "/chat/completions", token="hf_x", request_id="r1", deadline=upstream.deadline(),
            body=b"{}", tried=lambda: tried.append(1),
        )  # fmt: skip
        assert response.status_code == 200 and len(seen) == upstream.UNSENT_TRIES
        assert len(tried) == 1
    finally:
        await upstream.aclose()
        upstream.reset()


def test_only_a_write_that_failed_counts_as_unsent():
    request = httpx.Request("POST", "http://router.test/v1")
    assert upstream._unsent(httpx.WriteError("x", request=request))
    wrapped = httpx.ConnectTimeout("x", request=request)
    wrapped.__cause__ = aiohttp.ClientOSError(None, "Can not write request body for http://router.test/v1")
    assert upstream._unsent(wrapped)
    refused = httpx.ConnectTimeout("x", request=request)
    refused.__cause__ = ConnectionRefusedError(111, "Connection refused")  # a connection failure
    assert not upstream._unsent(refused)
    assert not upstream._unsent(httpx.ReadError("Server disconnected", request=request))


async def translated(raised: BaseException, broken=UpstreamError.STREAM_CUT) -> UpstreamError:
    with pytest.raises(UpstreamError) as caught:
        async with upstream._translated(upstream.deadline(), "late", broken):
            raise raised
    return caught.value


REQUEST = httpx.Request("GET", "http://router.test/v1")


@pytest.mark.parametrize(
    ("raised", "kind"),
    [
        (httpx.ReadTimeout("read", request=REQUEST), UpstreamError.TIMEOUT),
        (httpx.PoolTimeout("pool", request=REQUEST), UpstreamError.SATURATED),
        (httpx.ConnectError("refused", request=REQUEST), UpstreamError.STREAM_CUT),
        (httpx.ReadError("reset", request=REQUEST), UpstreamError.STREAM_CUT),
        (httpx.RemoteProtocolError("peer closed", request=REQUEST), UpstreamError.STREAM_CUT),
        (raised_from(httpx.ConnectTimeout("x"), aiohttp.ServerDisconnectedError()), UpstreamError.STREAM_CUT),
        (TimeoutError(), UpstreamError.TIMEOUT),
    ],
)
async def test_each_failure_leaves_as_one_upstream_error(raised, kind):
    error = await translated(raised)
    assert error.kind == kind
    assert error.detail == ("late" if isinstance(raised, TimeoutError) else upstream._describe(raised))
    assert error.__suppress_context__  # nothing of httpx's in the traceback a client could see


async def test_a_failure_before_the_headers_is_a_connection_error():
    error = await translated(httpx.ConnectError("refused", request=REQUEST), UpstreamError.CONNECTION)
    assert (error.kind, error.detail) == (UpstreamError.CONNECTION, "refused")


async def test_the_deadline_is_absolute_and_a_timeout():
    loop = asyncio.get_running_loop()
    with pytest.raises(UpstreamError) as caught:
        async with upstream._translated(loop.time() + 0.05, "the stream stalled", UpstreamError.STREAM_CUT):
            await asyncio.sleep(5)
    assert (caught.value.kind, caught.value.detail) == (UpstreamError.TIMEOUT, "the stream stalled")
    with pytest.raises(UpstreamError):
        async with upstream._translated(loop.time() - 1, "late", UpstreamError.STREAM_CUT):
            await asyncio.sleep(0)


async def test_what_is_not_a_failure_passes_through():
    async with upstream._translated(upstream.deadline(), "late", UpstreamError.STREAM_CUT):
        pass
    with pytest.raises(ValueError):
        async with upstream._translated(upstream.deadline(), "late", UpstreamError.STREAM_CUT):
            raise ValueError("a bug of ours stays a bug")

    async def cancelled():
        async with upstream._translated(upstream.deadline(), "late", UpstreamError.STREAM_CUT):
            await asyncio.sleep(5)

    task = asyncio.create_task(cancelled())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):  # a client gone is no router failure
        await task


async def test_a_caller_s_header_cannot_stand_beside_ours_in_another_case(hf):
    route = hf.post("/messages").respond(200, json={})
    response = await upstream.send(
        "POST",
        "/messages",
        token="hf_ours",
        request_id="r1",
        deadline=upstream.deadline(),
        body=b"{}",
        headers={"authorization": "Bearer CLIENT", "AUTHORIZATION": "x", "anthropic-version": "2023-06-01"},
    )
    await response.aclose()
    sent = route.calls.last.request.headers
    assert sent.get_list("authorization") == ["Bearer hf_ours"]
    assert sent["anthropic-version"] == "2023-06-01"


async def test_a_cookie_the_router_sets_never_goes_back_with_another_request(hf):
    route = hf.post("/chat/completions").respond(200, json={}, headers={"Set-Cookie": "session=one-user"})
    for request_id in ("r1", "r2"):
        response = await upstream.send(
            "POST",
            "/chat/completions",
            token="hf_x",
            request_id=request_id,
            deadline=upstream.deadline(),
            body=b"{}",
        )
        await response.aclose()
    assert "cookie" not in route.calls.last.request.headers
