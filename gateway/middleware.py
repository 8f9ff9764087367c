"""Middleware. Everything on the API path is async-only: no hook runs in a thread."""

from __future__ import annotations

import inspect
import re
import uuid

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string

# Probed by address (load balancers, Docker, Prometheus): no host check, no site middleware.
PROBE_PATHS = ("/health", "/metrics")
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@+=/-]{1,128}")


def request_id_from(value: str | None) -> str:
    """The client's request id when it is sane, else a fresh one."""
    if value and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


def is_api_path(path: str) -> bool:
    prefix = settings.API_PREFIX
    return path == prefix or path.startswith(prefix + "/")


def _as_async(handler):
    if not iscoroutinefunction(handler):
        return sync_to_async(handler)
    if inspect.iscoroutinefunction(handler):
        return handler

    # Marked async the asgiref way (Django's MiddlewareMixin), which middleware that check with
    # inspect (ServeStatic) do not recognise before Python 3.12.
    async def call(request):
        return await handler(request)

    return call


class RequestIdMiddleware:
    """Give every request an id (the client's `x-request-id` if sane) and echo it back."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        request.request_id = request_id_from(request.META.get("HTTP_X_REQUEST_ID"))
        response = await self.get_response(request)
        response["x-request-id"] = request.request_id
        return response


class SiteOnlyMiddleware:
    """Run `SITE_MIDDLEWARE` (sessions, auth, CSRF, messages: what the admin needs) for every
    path outside `API_PREFIX`, and nothing at all for API paths.

    Those middleware are sync; under ASGI Django runs each of their hooks in a thread, which
    the API path must not pay for. Their `process_view` hooks (CSRF's check) are relayed here.
    """

    sync_capable = False
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        chain = get_response
        self._view_hooks = []
        for path in reversed(settings.SITE_MIDDLEWARE):
            middleware = import_string(path)
            # As Django's own loader does: a sync-only middleware gets a sync
            # handler, and is itself called through a thread.
            if getattr(middleware, "async_capable", False):
                instance = middleware(_as_async(chain))
            else:
                instance = middleware(async_to_sync(chain) if iscoroutinefunction(chain) else chain)
            for hook in ("process_template_response", "process_exception"):
                if hasattr(instance, hook):
                    raise ImproperlyConfigured(f"SITE_MIDDLEWARE does not support {path}.{hook}.")
            if hasattr(instance, "process_view"):
                view_hook = instance.process_view
                if not iscoroutinefunction(view_hook):
                    view_hook = sync_to_async(view_hook)
                self._view_hooks.insert(0, view_hook)
            chain = instance
        self.site_chain = _as_async(chain)
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        if is_api_path(request.path_info):
            # The one check of the site stack the API needs too: ALLOWED_HOSTS (raises
            # DisallowedHost, answered 400 by the error handlers).
            request.get_host()
            return await self.get_response(request)
        if request.path_info in PROBE_PATHS:
            # Probed by address, under any Host: no host check, no sessions, no redirect to HTTPS.
            return await self.get_response(request)
        return await self.site_chain(request)

    async def process_view(self, request, view_func, view_args, view_kwargs):
        if is_api_path(request.path_info) or request.path_info in PROBE_PATHS:
            return None
        for hook in self._view_hooks:
            response = await hook(request, view_func, view_args, view_kwargs)
            if response is not None:
                return response
        return None
