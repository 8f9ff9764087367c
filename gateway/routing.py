"""Which of the two Django stacks serves a request: the one place that decides it.

The API (under `API_PREFIX`) and the probes go to `gateway.handler.ApiHandler`: its own
async-only middleware, its own URLs and error pages, no thread per request. Everything else
(the admin, its static files, the accounts API, the index) goes to Django's own handler with
`MIDDLEWARE`, so that Django's admin and deploy checks look at the stack that serves it.
"""

from __future__ import annotations

from django.conf import settings
from django.core.handlers.asgi import get_script_prefix

# Probed by address (load balancers, Docker, Prometheus): no sessions, no redirect to HTTPS.
PROBE_PATHS = frozenset({"/health", "/metrics"})


def is_api_path(path: str) -> bool:
    prefix = settings.API_PREFIX
    return path == prefix or path.startswith(prefix + "/")


def for_api_handler(scope) -> bool:
    """Whether the API handler serves this HTTP request."""
    path = scope["path"].removeprefix(get_script_prefix(scope).rstrip("/"))
    return path in PROBE_PATHS or is_api_path(path)


class Router:
    """An ASGI app: HTTP requests for the API handler to `api`, the rest to `site`."""

    def __init__(self, api, site) -> None:
        self.api = api
        self.site = site

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and for_api_handler(scope):
            await self.api(scope, receive, send)
        else:
            await self.site(scope, receive, send)
