"""API keys: their format, and recognising one on the hot path.

A lookup costs a database query once per AUTH_CACHE_TTL seconds per key and process; in
between, a hit is a dict lookup: no I/O, no thread hop. Revocation and expiry therefore take
effect on every worker within AUTH_CACHE_TTL (expiry is also checked on every request).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings

from accounts import allowlist, crypto, offloop, runtime
from accounts.limits import NO_LIMITS, KeyLimits, Scope

if TYPE_CHECKING:
    from accounts.models import UserPolicy

KEY_PREFIX = "hfp_"
DISPLAY_LENGTH = 12  # "hfp_" and 8 characters: enough to tell keys apart, useless to guess
_MAX_CACHED = 10_000


@dataclass(frozen=True)
class Caller:
    """Who is calling, and with which Hugging Face token their requests go upstream."""

    key_id: int
    key_prefix: str
    user_id: int
    username: str
    is_staff: bool
    token_name: str
    token_id: int | None = None  # None: the server's HF_TOKEN
    # The token in the clear; empty when there is none to use (see `token_problem`). Never logged.
    upstream_token: str = ""
    token_problem: str = ""  # "missing" or "undecryptable"
    expires_at: float | None = None  # epoch seconds
    allowed_models: tuple[str, ...] = ()  # empty: any model
    limits: KeyLimits = NO_LIMITS
    team_id: int | None = None
    bill_to: str = ""  # the Hugging Face organisation the router bills (X-HF-Bill-To)
    scopes: tuple[Scope, ...] = ()  # the team's limits and its caps per member

    def __repr__(self) -> str:
        return f"Caller(user={self.username!r}, key={self.key_prefix!r})"


def generate() -> str:
    """A new key: the prefix and 256 bits of randomness."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def presented_key(request) -> str:
    """The key a request carries: `Authorization: Bearer <key>` or `x-api-key: <key>`."""
    authorization = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.META.get("HTTP_X_API_KEY", "").strip()


def looks_like_a_key(key: str) -> bool:
    # Refused without a lookup: not ours, or absurd. A stored digest is not a key either.
    return key.startswith(KEY_PREFIX) and 20 <= len(key) <= 100


class _Lookups:
    """Cached lookups by digest. `generation` counts resets: a lookup begun before one must not
    refill the cache."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[float, Caller | None]] = {}
        self.generation = 0


_lookups = _Lookups()
_loading = runtime.PerLoop(dict)  # (digest, generation) → the query under way, on each loop


@runtime.resettable
def reset() -> None:
    """Drop every cached lookup (a revocation that must not wait for the TTL; tests)."""
    _lookups.generation += 1
    _lookups.entries.clear()


async def aresolve(key: str) -> Caller | None:
    """The caller a key belongs to, or None for an unknown, revoked or expired key.

    Raises django.db.DatabaseError when the database cannot answer (a 503, never a 401).
    """
    found = _from_cache(key)
    if not isinstance(found, _Miss):
        return found
    # The requests that miss together (an entry expired under load) share one query: one
    # begun before a reset (a revocation) is not joined.
    loading, lookup = _loading.get(), (found.digest, found.generation)
    if lookup not in loading:
        loading[lookup] = asyncio.ensure_future(_looked_up(found))
        loading[lookup].add_done_callback(lambda _: loading.pop(lookup, None))
    return _unexpired(await asyncio.shield(loading[lookup]))


async def _looked_up(found: _Miss) -> Caller | None:
    return found.keep(await offloop.run(_load, found.digest))


def resolve(key: str) -> Caller | None:
    """`aresolve` for sync code (the DRF API), sharing its cache."""
    found = _from_cache(key)
    if not isinstance(found, _Miss):
        return found
    return found.keep(_load(found.digest))


@dataclass(frozen=True)
class _Miss:
    """A lookup the cache could not answer; its TTL counts from before the query, since the
    row read may be older than its answer."""

    digest: str
    started: float
    generation: int  # a reset() meanwhile (a revocation): answer, but do not keep it

    def keep(self, caller: Caller | None) -> Caller | None:
        if self.generation == _lookups.generation:
            entries = _lookups.entries
            if len(entries) >= _MAX_CACHED:
                entries.clear()  # a flood of made-up keys must not grow memory without bound
            entries[self.digest] = (self.started + settings.AUTH_CACHE_TTL, caller)
        return _unexpired(caller)


def _from_cache(key: str) -> Caller | _Miss | None:
    if not looks_like_a_key(key):
        return None
    key_digest = digest(key)
    cached = _lookups.entries.get(key_digest)
    if cached is not None and cached[0] > time.monotonic():
        return _unexpired(cached[1])
    return _Miss(key_digest, time.monotonic(), _lookups.generation)


def _unexpired(caller: Caller | None) -> Caller | None:
    if caller is not None and caller.expires_at is not None and caller.expires_at <= time.time():
        return None
    return caller


def _load(key_digest: str) -> Caller | None:
    from accounts.models import ApiKey

    key = (
        ApiKey.objects.active()
        .select_related("user", "user__policy", "hf_token", "team", "team__hf_token")
        .filter(digest=key_digest)
        .first()
    )
    if key is None or not key.user.is_active or not hmac.compare_digest(key.digest, key_digest):
        return None
    defaults = _user_policy(key.user)
    token, token_name, problem = settings.HF_TOKEN, "HF_TOKEN", ""
    team = key.team
    # The key's own token, else its team's, else the server's.
    hf_token = key.hf_token or (team.hf_token if team is not None else None)
    token_id = hf_token.pk if hf_token is not None else None
    if hf_token is not None:
        token_name = hf_token.name
        try:
            token = hf_token.value()
        except crypto.DecryptionError:
            token, problem = "", "undecryptable"  # fail closed: never another token
    if not token and not problem:
        problem = "missing"
    return Caller(
        key_id=key.pk,
        key_prefix=key.prefix,
        user_id=key.user_id,
        username=key.user.get_username(),
        is_staff=key.user.is_staff,
        token_name=token_name,
        token_id=token_id,
        upstream_token=token,
        token_problem=problem,
        expires_at=key.expires_at.timestamp() if key.expires_at else None,
        allowed_models=allowlist.parse_models(
            key.allowed_models or (team.allowed_models if team is not None else "") or defaults.allowed_models
        ),
        # Each limit: the key's own, else the user's default.
        limits=KeyLimits(
            **{
                name: getattr(key, name) if getattr(key, name) is not None else getattr(defaults, name)
                for name in key.LIMIT_FIELDS
            }
        ),
        team_id=key.team_id,
        bill_to=team.bill_to if team is not None else "",
        scopes=_user_scopes(key.user, defaults)
        + (_team_scopes(team, key.user_id) if team is not None else ()),
    )


def _user_scopes(user, policy: UserPolicy) -> tuple[Scope, ...]:
    """Every key's request counts against its user's limits on all their keys together."""
    totals = KeyLimits(
        rpm=policy.total_rpm,
        tpm=policy.total_tpm,
        token_budget=policy.total_token_budget,
        usd_budget=policy.total_usd_budget,
    )
    if totals == NO_LIMITS:
        return ()
    return (Scope(None, f"User {user.get_username()} (all keys)", totals, user_id=user.pk),)


def _team_scopes(team, user_id: int) -> tuple[Scope, ...]:
    """A team key's request counts against the team's budgets and its caps per member."""
    label = f"Team {team.name}"
    return (
        Scope(team.pk, label, KeyLimits(token_budget=team.token_budget, usd_budget=team.usd_budget)),
        Scope(
            team.pk,
            f"{label} (each member)",
            KeyLimits(
                rpm=team.member_rpm,
                tpm=team.member_tpm,
                token_budget=team.member_token_budget,
                usd_budget=team.member_usd_budget,
            ),
            user_id=user_id,
        ),
    )


def _user_policy(user) -> UserPolicy:
    from accounts.models import UserPolicy

    try:
        return user.policy
    except UserPolicy.DoesNotExist:
        return UserPolicy(user=user)
