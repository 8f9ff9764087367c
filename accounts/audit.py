"""The audit trail: who did what to keys, limits and teams, who signed in (and who failed to),
when, and from where. One entry an event, written by `accounts.services` (so the admin, the
portal, the commands and the API write the same trail) and by the sign-in signals; never a
secret: keys by their display prefix, tokens by their name.

"From where" is the client's address for a request of the site (gateway.middleware's
AuditSourceMiddleware keeps it for the request's duration), "manage.py" for the command line.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any

from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver

_where: contextvars.ContextVar[str] = contextvars.ContextVar("audit_where", default="manage.py")


def record(action: str, *, actor=None, target: str = "", team=None, **detail: Any) -> None:
    """Write one entry. `detail`: what changed (field → [before, after]) or what was given."""
    from accounts.models import AuditEntry

    AuditEntry.objects.create(
        action=action,
        actor=actor if actor is not None and actor.pk else None,
        actor_name=actor.get_username() if actor is not None else "",
        target=target[:200],
        team=team,
        detail=detail,
        source=_where.get()[:100],
    )


@contextlib.contextmanager
def source(where: str):
    """What the entries written meanwhile say they came from (gateway.middleware's
    AuditSourceMiddleware: the site's request's client)."""
    token = _where.set(where or "unknown")
    try:
        yield
    finally:
        _where.reset(token)


@receiver(user_logged_in)
def _signed_in(sender, request, user, **kwargs) -> None:
    record("signed_in", actor=user, target=f"user {user.get_username()}", **_how(request))


@receiver(user_login_failed)
def _sign_in_failed(sender, credentials, request=None, **kwargs) -> None:
    # The credentials Django passes have their password masked; only the name is kept.
    from django.contrib.auth import get_user_model

    name = str(credentials.get(get_user_model().USERNAME_FIELD) or credentials.get("username") or "")
    record("sign_in_failed", target=f"user {name[:150]}", **_how(request))


def _how(request) -> dict:
    if request is None:
        return {}
    where = request.META.get("REMOTE_ADDR", "")
    return {"path": request.path[:200], **({"address": where} if where else {})}
