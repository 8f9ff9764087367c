"""The ASGI layer around Django: what Django's handler cannot do for us.

- Lifespan: Django has none; on shutdown queued usage records are written and the upstream
  client closes its connections.
- The request body limit, on the bytes actually received: Django reads a whole body (to disk if
  need be) before any view runs, and trusts `Content-Length` when it checks size.
- `Handler`: Django's ASGI handler without its per-request thread on the API path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.urls import set_script_prefix, set_urlconf
from django.utils.log import log_response

from accounts import runtime
from gateway import catalog, errors, metrics
from gateway.middleware import is_api_path, request_id_from


class Handler(ASGIHandler):
    """Django's ASGI handler; on the API path, without a thread per request.

    Django sends `request_started`/`request_finished` and closes each response through
    `sync_to_async` inside a fresh `ThreadSensitiveContext`: every request starts a thread and
    joins it, which measured as a fifth of the proxy's CPU. Those hooks exist to recycle the
    request's database connection, and the API path never holds one (its rare queries run in
    `accounts.offloop.run`, which returns its connection at once), so there they run on the event
    loop: the signal receivers find no connection to close and return. Everything else is
    Django's `handle()` (5.2) unchanged; other paths (the admin) take Django's own route.
    """

    def __init__(self) -> None:
        super().__init__()
        # Signal.send() cannot call an async receiver from the event loop; should an app add
        # one, every path takes Django's route.
        self.api_route = not any(
            signal._live_receivers(self.__class__)[1]
            for signal in (signals.request_started, signals.request_finished)
        )

    async def __call__(self, scope, receive, send):
        if (
            self.api_route
            and scope["type"] == "http"
            and is_api_path(scope["path"].removeprefix(get_script_prefix(scope).rstrip("/")))
        ):
            await self.handle_api(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def get_response_async(self, request):
        if not is_api_path(request.path_info):
            return await super().get_response_async(request)
        set_urlconf(settings.ROOT_URLCONF)
        response = await self._middleware_chain(request)
        response._resource_closers.append(request.close)
        if response.status_code >= 400:
            log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        return response

    async def handle_api(self, scope, receive, send):
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            error_response.close()
            return

        async def process_request(request, send):
            response = await self.run_get_response(request)
            with contextlib.suppress(asyncio.CancelledError):  # the client left meanwhile
                await self.send_response(response, send)
            return response

        # As Django does: the disconnect listener first, so that it never keeps the request
        # task from being cancelled.
        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request(request, send)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The server gave up on this request (its graceful-shutdown timeout ended). Django
            # would leave the view's task running on its own, to be cut off unrecorded when the
            # loop closes; ending it here lets its usage be recorded before the lifespan flush.
            if exchange := getattr(request, "exchange", None):
                exchange.server_shutdown = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            signals.request_finished.send(sender=self.__class__)
        else:
            response.close()
        body_file.close()


class GatewayASGI:
    def __init__(self, app) -> None:
        self.app = app
        self.in_flight: set[asyncio.Task] = set()  # HTTP requests being served

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope, receive, send) -> None:
        limit = settings.MAX_REQUEST_BYTES
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse(scope, send, errors.request_too_large(limit))
            return

        received = 0
        refusal = None  # an ApiError to answer once Django has given up on the request
        body_done = False

        async def limited_receive():
            nonlocal received, refusal, body_done
            if body_done:  # Django listening for a disconnect while the view runs: no limit
                return await receive()
            try:
                # A client that stops sending its body must not hold a request open forever.
                async with asyncio.timeout(settings.CLIENT_BODY_TIMEOUT):
                    message = await receive()
            except TimeoutError:
                refusal = errors.body_timeout(settings.CLIENT_BODY_TIMEOUT)
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                body_done = not message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > limit:
                    # Django stops reading at a disconnect and sends nothing; we answer.
                    refusal = errors.request_too_large(limit)
                    return {"type": "http.disconnect"}
            return message

        task = asyncio.current_task()
        self.in_flight.add(task)
        try:
            await self.app(scope, limited_receive, send)
        finally:
            self.in_flight.discard(task)
        if refusal is not None:
            await _refuse(scope, send, refusal)

    async def _lifespan(self, receive, send) -> None:
        refresher = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if settings.PRICES_REFRESH_INTERVAL > 0 and settings.HF_TOKEN:
                    refresher = asyncio.create_task(
                        catalog.refresh_prices_every(settings.PRICES_REFRESH_INTERVAL)
                    )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if refresher is not None:
                    refresher.cancel()
                await _shutdown(settings.USAGE_SHUTDOWN_TIMEOUT, self.in_flight)
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _shutdown(seconds: float, in_flight: set[asyncio.Task]) -> None:
    """uvicorn has let in-flight requests finish, and cancelled those still running at its
    graceful-shutdown timeout, without waiting for them to unwind. They end first (each is
    recorded as it ends), then what they left running (closing a stream whose client left,
    giving back limit slots); then the queued usage records are written and the connections
    closed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    if in_flight:
        await asyncio.wait(list(in_flight), timeout=max(0.1, seconds))
    await runtime.stop(deadline - loop.time())
    metrics.process_exited()


def _header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1").strip()
    return None


async def _refuse(scope, send, error: errors.ApiError) -> None:
    """Answer a request refused before Django saw all of it, and close the connection."""
    body = json.dumps(error.body()).encode()
    request_id = request_id_from(_header(scope, b"x-request-id"))
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
