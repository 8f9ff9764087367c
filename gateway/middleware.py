"""Middleware of both stacks (`API_MIDDLEWARE` and `MIDDLEWARE`): async-only, nothing in a thread."""

from __future__ import annotations

import re
import uuid

from asgiref.sync import markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.utils import translation
from django.utils.cache import patch_vary_headers

from accounts import audit
from gateway import errors

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@+=/-]{1,128}")


def request_id_from(value: str | None) -> str:
    """The client's request id when it is sane, else a fresh one."""
    if value and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


class AsyncMiddleware:
    """What makes a middleware async-only: Django calls it on the event loop, never in a thread."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)


class RequestIdMiddleware(AsyncMiddleware):
    """Give every request an id (the client's `x-request-id` if sane) and echo it back."""

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        request.request_id = request_id_from(request.META.get("HTTP_X_REQUEST_ID"))
        response = await self.get_response(request)
        response["x-request-id"] = request.request_id
        return response


class RefuseNulMiddleware(AsyncMiddleware):
    """A NUL character in the path, the query string or a cookie is a 400: no database takes it
    (PostgreSQL refuses it in any text, which made `?user=bob%00` a 500, and a quoted cookie's
    `\\000` a 500 in the session lookup) and nothing legitimate sends it."""

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        query = request.META.get("QUERY_STRING", "")
        if "%00" in query or "\x00" in query or "\x00" in request.path:
            return _nul(request, "The URL may not contain a NUL character (%00).")
        # Parsed only when a cookie is sent (API clients send none): unquoting makes the NUL.
        if "HTTP_COOKIE" in request.META and any("\x00" in n + v for n, v in request.COOKIES.items()):
            return _nul(request, "A cookie may not contain a NUL character.")
        return await self.get_response(request)


def _nul(request: HttpRequest, message: str) -> HttpResponse:
    return errors.invalid_request(message).render(errors.speaks_anthropic(request.path, request.headers))


class AuditSourceMiddleware(AsyncMiddleware):
    """The site's requests: what the audit entries they write say they came from (the client's
    address, as the server saw it: FORWARDED_ALLOW_IPS decides whether a proxy's word counts)."""

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        with audit.source(request.META.get("REMOTE_ADDR", "")):
            return await self.get_response(request)


class LanguageMiddleware(AsyncMiddleware):
    """The site's pages in the browser's language (Accept-Language, among LANGUAGES): Django's
    LocaleMiddleware without URL prefixes, and without its hooks' hop to a thread."""

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        language = translation.get_language_from_request(request)
        translation.activate(language)
        request.LANGUAGE_CODE = language
        response = await self.get_response(request)
        patch_vary_headers(response, ("Accept-Language",))
        response.headers.setdefault("Content-Language", language)
        return response
