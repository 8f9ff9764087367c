"""Who is calling: the one place a request is authenticated.

For now every caller is the operator and the upstream token is `HF_TOKEN`; per-user API keys
replace this function's body, not its callers.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest


@dataclass(frozen=True)
class Caller:
    name: str
    # The Hugging Face token this caller's requests go upstream with. Never logged.
    upstream_token: str = ""

    def __repr__(self) -> str:
        return f"Caller(name={self.name!r})"


async def authenticate(request: HttpRequest) -> Caller:
    """The caller of a gateway request, or `errors.ApiError` (401)."""
    return Caller(name="environment", upstream_token=settings.HF_TOKEN)
