"""Bearer-key authentication for the self-service API.

Kept apart from the views: DRF imports its authentication classes while loading its views.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import DatabaseError
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from accounts import keys


class ServiceUnavailable(exceptions.APIException):
    """The key could not be looked up: the database did not answer. Answered with the gateway's
    own 503 body (REST_FRAMEWORK's EXCEPTION_HANDLER), so no message of its own here."""

    status_code = 503
    default_code = "service_unavailable"


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        key = keys.presented_key(request)
        if not key:
            return None
        try:
            caller = keys.resolve(key)
            user = (
                get_user_model().objects.filter(pk=caller.user_id, is_active=True).first() if caller else None
            )
        except DatabaseError:
            raise ServiceUnavailable() from None
        if user is None:
            raise exceptions.AuthenticationFailed("Invalid API key.", code="invalid_api_key")
        return user, caller

    def authenticate_header(self, request) -> str:
        return "Bearer"
