"""The only module that talks to the Hugging Face router (and the only one importing httpx).

One pooled `httpx.AsyncClient` per event loop, on the transport `UPSTREAM_TRANSPORT` names.
Every failure leaves here as an `UpstreamError` with a `kind`; `gateway.errors` decides what it
means to the client. Deadlines are absolute `loop.time()` values so that one request's budget
(REQUEST_TIMEOUT) spans connecting, waiting for headers and every stream chunk.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from django.conf import settings

from accounts import runtime
from gateway import scrub
from hfproxy_site import __version__

USER_AGENT = f"hfproxy/{__version__}"


class UpstreamError(Exception):
    STATUS = "status"  # the router answered with a non-2xx status
    TIMEOUT = "timeout"  # connect, first byte, a chunk gap or the whole request took too long
    CONNECTION = "connection"  # no answer: refused, reset, DNS, TLS…
    MALFORMED = "malformed"  # a 2xx we cannot use: not JSON, not SSE, a redirect
    STREAM_CUT = "stream_cut"  # the stream broke after it started
    SATURATED = "saturated"  # no free connection in our pool in time: the router saw nothing

    def __init__(
        self,
        kind: str,
        detail: str = "",
        *,
        status: int | None = None,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{kind}: {detail or status}")
        self.kind = kind
        self.detail = detail
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.retried = False  # this is the second attempt's failure: a client's retry would be a third

    @property
    def says_when(self) -> bool:
        """A 503 that says when to come back (Retry-After, or HF's `estimated_time` while a
        model loads): retrying at once cannot help."""
        return self.status == 503 and ("retry-after" in self.headers or b"estimated_time" in self.body)


def _new_client(transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=settings.UPSTREAM_MAX_CONNECTIONS,
        max_keepalive_connections=settings.UPSTREAM_MAX_CONNECTIONS,
        keepalive_expiry=30,
    )
    if transport is None:
        if settings.UPSTREAM_TRANSPORT == "aiohttp":
            # httpx's API over aiohttp's connection handling: measured ~7x less CPU per request
            # than httpx's own transport (see README, "Upstream transport").
            transport = _aiohttp_transport(limits)
        else:
            transport = httpx.AsyncHTTPTransport(limits=limits)
    # httpx's timeouts are inactivity timeouts; the absolute deadlines below do the rest.
    timeout = httpx.Timeout(
        connect=settings.CONNECT_TIMEOUT,
        read=settings.READ_TIMEOUT,
        write=settings.READ_TIMEOUT,
        pool=settings.CONNECT_TIMEOUT,
    )
    return _Client(
        transport=transport,
        timeout=timeout,
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
    )


class _NoCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        pass


class _Client(httpx.AsyncClient):
    """httpx's client without a cookie jar. One client serves every caller, so a cookie the
    router set on one request must not ride along on the next (another user's); and parsing
    every answer's headers for cookies through urllib's jar cost 2 % of a request's CPU."""

    @property
    def cookies(self) -> httpx.Cookies:
        return _NoCookies()

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        raise TypeError("the upstream client keeps no cookies")


# aiohttp has one timeout for getting a connection, waiting for a free one and connecting alike
# (httpx-aiohttp passes the pool timeout as it), and raises the same error for both: its trace of
# the wait tells them apart. Set in the request's own task, so the flag is that request's.
_waiting_for_pool: contextvars.ContextVar[bool] = contextvars.ContextVar("waiting_for_pool", default=False)


async def _queued(session: Any, context: Any, params: Any) -> None:
    _waiting_for_pool.set(True)


async def _dequeued(session: Any, context: Any, params: Any) -> None:
    _waiting_for_pool.set(False)


def _aiohttp_transport(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    import aiohttp
    from httpx_aiohttp import AiohttpTransport

    def session() -> aiohttp.ClientSession:
        # httpx-aiohttp's own session and connector, with the trace of waits for a connection.
        trace = aiohttp.TraceConfig()
        trace.on_connection_queued_start.append(_queued)
        trace.on_connection_queued_end.append(_dequeued)
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections, keepalive_timeout=limits.keepalive_expiry, ssl=transport.ssl_context
        )
        return aiohttp.ClientSession(connector=connector, trace_configs=[trace])

    transport = AiohttpTransport(limits=limits, client=session)
    return transport


_client = runtime.PerLoop(_new_client, close=httpx.AsyncClient.aclose)


def client() -> httpx.AsyncClient:
    """The shared client of the running event loop (a client cannot cross loops)."""
    return _client.get()


def set_transport(transport: httpx.AsyncBaseTransport) -> None:
    """New clients use this transport (tests, benchmarks) until `reset()`."""
    _client.use(functools.partial(_new_client, transport))


def reset() -> None:
    """New clients use the transport UPSTREAM_TRANSPORT names again."""
    _client.reset()


async def aclose() -> None:
    """Close the running loop's client: on shutdown, and between tests."""
    await _client.aclose()


def deadline() -> float:
    """The absolute time by which a request started now must be done."""
    return asyncio.get_running_loop().time() + settings.REQUEST_TIMEOUT


def _until(deadline: float) -> float:
    """The sooner of the request's deadline and the longest wait for one read."""
    return min(deadline, asyncio.get_running_loop().time() + settings.READ_TIMEOUT)


def _kind(exc: httpx.HTTPError, broken: str) -> str:
    if _is_pool_timeout(exc):
        return UpstreamError.SATURATED
    return UpstreamError.TIMEOUT if _is_timeout(exc) else broken


def _is_pool_timeout(exc: httpx.HTTPError) -> bool:
    # httpx's transport says PoolTimeout; httpx-aiohttp a ConnectTimeout that came while waiting.
    return isinstance(exc, httpx.PoolTimeout) or (
        isinstance(exc, httpx.ConnectTimeout)
        and _waiting_for_pool.get()
        and isinstance(exc.__cause__, TimeoutError)
    )


def _is_timeout(exc: httpx.HTTPError) -> bool:
    if not isinstance(exc, httpx.TimeoutException):
        return False
    # httpx-aiohttp raises ConnectTimeout for every aiohttp connection error (refused, reset…);
    # among aiohttp's errors only its timeouts, which are TimeoutErrors, are timeouts.
    cause = exc.__cause__
    from_aiohttp = type(cause).__module__.startswith("aiohttp")
    return not from_aiohttp or isinstance(cause, TimeoutError)


def _describe(exc: BaseException) -> str:
    # httpx-aiohttp renames aiohttp's errors; the original says what really happened.
    cause = exc.__cause__ or exc
    text = str(cause).strip()
    return text or type(cause).__name__


class _translated:
    """Within the absolute deadline `until`: running out of time, or any httpx failure, leaves as
    an `UpstreamError`. `late` says what did not come in time; `broken` is the kind of a failure
    that is not a timeout (CONNECTION before the headers, STREAM_CUT after). A class, not a
    generator: it wraps every stream chunk."""

    __slots__ = ("_broken", "_late", "_timeout")

    def __init__(self, until: float, late: str, broken: str) -> None:
        self._timeout = asyncio.timeout_at(until)
        self._late = late
        self._broken = broken

    def __aenter__(self) -> Awaitable[Any]:
        return self._timeout.__aenter__()  # its awaitable itself: no frame of ours per chunk

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError:
            exc = TimeoutError()
        if isinstance(exc, TimeoutError):
            if _waiting_for_pool.get():  # the deadline came first, still waiting (aiohttp's trace)
                raise UpstreamError(UpstreamError.SATURATED, "no free connection in time") from None
            raise UpstreamError(UpstreamError.TIMEOUT, self._late) from None
        if isinstance(exc, httpx.HTTPError):
            raise UpstreamError(_kind(exc, self._broken), _describe(exc)) from None


async def send(
    method: str,
    path: str,
    *,
    token: str,
    request_id: str,
    deadline: float,
    body: bytes | None = None,
    stream: bool = False,
    tried: Callable[[], None] = lambda: None,
    base: str | None = None,
    headers: dict[str, str] | None = None,
    bill_to: str = "",
    content_type: str = "application/json",
    accept: str | None = None,
) -> httpx.Response:
    """Send a request to the router and return the response once its headers arrived.

    The body is not read yet: the caller reads it with `read_body` or `iter_chunks` and must
    close the response. A non-2xx answer is read, closed and raised as `UpstreamError`.
    A failed connection or a 5xx is retried once (a cancelled request, a client gone, is not;
    nor a 503 that says when to come back); `tried` is called for each attempt. `path` is under
    HF_BASE_URL, or under `base`. `headers` are the client's that its API defines (Anthropic's
    version and betas); ours come after them, so none can replace the token. `content_type` is
    the body's (audio for speech recognition); `accept` what to ask for, when not JSON or SSE
    (an image).
    """
    ours = {
        "X-Request-Id": request_id,
        "Accept": accept or ("text/event-stream" if stream else "application/json"),
        # Compressed SSE would be held back by the router's gzip and cost us CPU to inflate.
        "Accept-Encoding": "identity",
    }
    if token:
        ours["Authorization"] = f"Bearer {token}"
        scrub.in_use(token)
    if bill_to:  # the router bills that Hugging Face organisation (a team's `bill_to`)
        ours["X-HF-Bill-To"] = bill_to
    if body is not None:
        ours["Content-Type"] = content_type
    # Header names are case-insensitive: none of the client's may stand beside one of ours.
    taken = {name.lower() for name in ours} | {"host", "content-length"}
    headers = {**{k: v for k, v in (headers or {}).items() if k.lower() not in taken}, **ours}
    http = client()
    request = http.build_request(
        method, _url((base or settings.HF_BASE_URL) + path), content=body, headers=headers
    )
    try:
        tried()
        return await _send_once(http, request, deadline)
    except UpstreamError as error:
        if not _worth_retrying(error):
            raise
    # Once, and only here, before anything reached our client: a pooled connection the router
    # had just closed, or a router replica that failed, usually works the second time.
    tried()
    try:
        return await _send_once(http, request, deadline)
    except UpstreamError as error:
        error.retried = True
        raise


@functools.lru_cache(maxsize=256)
def _url(url: str) -> httpx.URL:
    # Parsed once: the few endpoints' URLs come back on every request (httpx parses a string
    # afresh each time, and takes a URL as it is).
    return httpx.URL(url)


def _worth_retrying(error: UpstreamError) -> bool:
    return error.kind == UpstreamError.CONNECTION or (
        error.kind == UpstreamError.STATUS and error.status in (500, 502, 503, 504) and not error.says_when
    )


# A pooled connection the router closed while idle can fail as the request is written: then the
# request never left, and another connection is tried at once (not a retry: the router saw
# nothing). Several idle connections can die together, hence more than one.
UNSENT_TRIES = 3


def _unsent(exc: httpx.HTTPError) -> bool:
    # httpx's transport says WriteError; httpx-aiohttp passes aiohttp's ClientOSError on as this.
    return isinstance(exc, httpx.WriteError) or "Can not write request body" in str(exc.__cause__ or "")


async def _send_once(http: httpx.AsyncClient, request: httpx.Request, deadline: float) -> httpx.Response:
    for tries_left in range(UNSENT_TRIES - 1, -1, -1):
        _waiting_for_pool.set(False)
        async with _translated(_until(deadline), "no response headers in time", UpstreamError.CONNECTION):
            try:
                response = await http.send(request, stream=True)
            except httpx.HTTPError as exc:
                if tries_left and _unsent(exc):
                    continue
                raise
        break

    if response.is_success:
        return response
    try:
        if response.is_redirect:
            raise UpstreamError(UpstreamError.MALFORMED, f"unexpected redirect (HTTP {response.status_code})")
        error_body = await _read(response, deadline)
        raise UpstreamError(
            UpstreamError.STATUS,
            status=response.status_code,
            body=error_body,
            headers={k.lower(): v for k, v in response.headers.items()},
        )
    finally:
        await response.aclose()


async def _read(response: httpx.Response, deadline: float) -> bytes:
    async with _translated(deadline, "the answer did not finish in time", UpstreamError.STREAM_CUT):
        return await response.aread()


async def read_body(response: httpx.Response, deadline: float) -> bytes:
    """Read a whole answer and close the response."""
    try:
        return await _read(response, deadline)
    finally:
        await response.aclose()


def is_event_stream(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")


async def iter_chunks(response: httpx.Response, deadline: float) -> AsyncIterator[bytes]:
    """Yield a streaming answer's bytes as they arrive, each wait bounded by READ_TIMEOUT and
    the request's deadline. Does not close the response: the caller does, on every path."""
    # Raw bytes skip httpx's decoder chain; only a router that ignored our identity
    # Accept-Encoding needs decoding.
    encoded = "content-encoding" in response.headers
    chunks = (response.aiter_bytes() if encoded else response.aiter_raw()).__aiter__()
    while True:
        async with _translated(_until(deadline), "the stream stalled", UpstreamError.STREAM_CUT):
            chunk = await anext(chunks, None)
        if chunk is None:
            return
        yield chunk
