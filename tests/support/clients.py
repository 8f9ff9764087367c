"""Django's async test client, routed as the server routes (gateway.routing): the API's paths
and the probes through the API's stack (gateway.handler.ApiStack), the rest through Django's."""

from __future__ import annotations

from django.test import client

from gateway.handler import ApiStack
from gateway.routing import for_api_handler


class ApiClientHandler(ApiStack, client.AsyncClientHandler):
    pass


class RoutedClientHandler(client.AsyncClientHandler):
    def __init__(self, enforce_csrf_checks=True, *args, **kwargs) -> None:
        super().__init__(enforce_csrf_checks, *args, **kwargs)
        self.api = ApiClientHandler(enforce_csrf_checks)

    async def __call__(self, scope):
        if for_api_handler(scope):
            return await self.api(scope)
        return await super().__call__(scope)


class AsyncClient(client.AsyncClient):
    def __init__(self, enforce_csrf_checks=False, *args, **kwargs) -> None:
        super().__init__(enforce_csrf_checks, *args, **kwargs)
        self.handler = RoutedClientHandler(enforce_csrf_checks)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
