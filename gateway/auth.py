"""Who is calling: the one place a gateway request is authenticated.

`Authorization: Bearer <key>` (or `x-api-key: <key>`), looked up through the in-process key
cache of `accounts.keys`; a cache hit costs no I/O.
"""

from __future__ import annotations

from django.http import HttpRequest

from accounts import keys
from accounts.keys import Caller
from gateway import errors

__all__ = ["Caller", "authenticate"]


async def authenticate(request: HttpRequest) -> Caller:
    """The caller of a gateway request, or `errors.ApiError`: 401 for any key that is not
    a valid one (all with the same body), 503 when the database cannot tell."""
    key = keys.presented_key(request)
    if not key:
        raise errors.invalid_api_key()
    try:
        caller = await keys.aresolve(key)
    except errors.DATABASE_DOWN:
        raise errors.service_unavailable() from None
    if caller is None:
        raise errors.invalid_api_key()
    return caller
