"""The API's Django handler: Django's ASGI handler with the API's stack, on the event loop.

Django's `ASGIHandler` sends `request_started`/`request_finished` and closes each response through
`sync_to_async` inside a fresh `ThreadSensitiveContext`: every request starts a thread and joins
it, which measured as a fifth of the proxy's CPU. Those hooks exist to recycle the request's
database connection, and the API path never holds one (its rare queries run in
`accounts.offloop.run`, which returns its connection at once; the health check closes its own),
so here they run on the event loop: the signal receivers find no connection to close and return.

The Django methods overridden below are pinned (tests/gateway/test_handler.py): a Django upgrade
that changes one of them fails a test, to compare the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import io

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core import signals
from django.core.exceptions import ImproperlyConfigured, RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.core.handlers.exception import convert_exception_to_response
from django.urls import set_script_prefix, set_urlconf
from django.utils.log import log_response
from django.utils.module_loading import import_string

from gateway.routing import PROBE_PATHS

# Django runs these hooks through a thread (MiddlewareMixin its request and response hooks, the
# loader process_exception always), so the API's middleware may not have them.
_HOOKS = (
    "process_request",
    "process_response",
    "process_view",
    "process_template_response",
    "process_exception",
)


class ApiStack(BaseHandler):
    """What makes a Django handler the API's: `API_MIDDLEWARE`, `gateway.urls` (OpenAI-shaped
    error pages) and `ALLOWED_HOSTS` checked for every path but the probes (`gateway.routing.PROBE_PATHS`: they
    come by address, not by name). Mixed into
    `ApiHandler` and into the tests' client (tests/support/clients.py)."""

    urlconf = "gateway.urls"

    def load_middleware(self, is_async=True):
        """The chain of `API_MIDDLEWARE` (always async), each middleware called as it is."""
        self._view_middleware, self._template_response_middleware, self._exception_middleware = [], [], []
        handler = convert_exception_to_response(self._get_response_async)
        for path in reversed(settings.API_MIDDLEWARE):
            handler = convert_exception_to_response(_async_middleware(path, handler))
        self._middleware_chain = handler

    async def get_response_async(self, request):
        # Django's (5.2) with the API's URLs, and without handing log_response to a thread for
        # every answer >= 400; the request is closed by the handler once the response is sent.
        request.urlconf = self.urlconf  # what resolve_request() resolves with
        set_urlconf(self.urlconf)  # what errors raised before are answered with
        response = await self._middleware_chain(request)
        if response.status_code >= 400:
            log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        return response

    def resolve_request(self, request):
        match = super().resolve_request(request)
        if request.path_info not in PROBE_PATHS:
            # The check of the site's stack (CommonMiddleware) the API needs too: raises
            # DisallowedHost, answered 400 in OpenAI's shape by gateway.views.bad_request.
            request.get_host()
        return match


def _async_middleware(path: str, get_response):
    factory = import_string(path)
    middleware = factory(get_response) if getattr(factory, "async_capable", False) else None
    if (
        middleware is None
        or not iscoroutinefunction(middleware)
        or any(hasattr(middleware, h) for h in _HOOKS)
    ):
        raise ImproperlyConfigured(
            f"API_MIDDLEWARE: {path} must be async-capable and have no process_* hooks: the API "
            "path runs nothing in a thread (put it in MIDDLEWARE, for the site only)."
        )
    return middleware


def _request_signals_sync_only() -> bool:
    # Signal.send() cannot call an async receiver from the event loop.
    return not any(
        signal._live_receivers(ApiHandler)[1]
        for signal in (signals.request_started, signals.request_finished)
    )


class ApiHandler(ApiStack, ASGIHandler):
    """Django's ASGI handler for the API path, without a thread per request, and ending the
    view when the server gives up on it (so that its usage is recorded)."""

    def __init__(self) -> None:
        super().__init__()
        # Should an app connect an async receiver to the request signals, Django's route.
        self.on_loop = _request_signals_sync_only()

    async def __call__(self, scope, receive, send):
        if self.on_loop and scope["type"] == "http":
            await self.serve(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def serve(self, scope, receive, send):
        """Django's `ASGIHandler.handle()` (5.2) with the signals sent and the response closed
        on the event loop, and the view cancelled when this is."""
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
        # As Django does: the disconnect listener first, so that it never keeps the request
        # task from being cancelled.
        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(self._respond(request, body_file, send)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await _cut_off(request, tasks)
            raise
        try:
            await _settle(tasks)
        except AssertionError:
            body_file.close()
            raise
        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            signals.request_finished.send(sender=self.__class__)
        else:
            request.close()
            response.close()  # sends request_finished
        body_file.close()

    async def _respond(self, request, body_file, send):
        response = await self.run_get_response(request)
        if response.streaming:
            _forget_body(request, body_file)
        with contextlib.suppress(asyncio.CancelledError):  # the client left meanwhile
            await self.send_response(response, send)
        return response


def _forget_body(request, body_file) -> None:
    """The view has returned a stream, which may last minutes, and every middleware is done with
    the request: its body (Django's bytes and the file they were read from, two copies of a
    coding agent's whole conversation) is needed no longer. What the stream may still need of it
    the relay keeps (gateway.relay.Prompt)."""
    body_file.close()
    request._body = b""  # HttpRequest.body's cache (its stream: a BytesIO over the same bytes)
    request._stream = io.BytesIO()


async def _settle(tasks: list[asyncio.Task]) -> None:
    """As Django does: a client's disconnect is no error; a task still running is cancelled."""
    for task in tasks:
        if task.done():
            with contextlib.suppress(RequestAborted):
                task.result()
        else:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _cut_off(request, tasks: list[asyncio.Task]) -> None:
    """The server gave up on this request (its graceful-shutdown timeout ended). Django would
    leave the view's task running on its own, to be cut off unrecorded when the loop closes;
    ending it here lets its usage be recorded before the lifespan flush."""
    if exchange := getattr(request, "exchange", None):
        exchange.server_shutdown = True
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
