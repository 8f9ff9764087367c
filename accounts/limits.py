"""Rate limits, concurrency and token budgets, counted in Django's cache.

Counters live in the `default` cache: local memory for one process, Redis (REDIS_URL) when
several workers or replicas must share them; there every step is one atomic INCR, so limits
hold across processes. `admit()` runs before a request goes upstream and refuses it with
`Refusal`; `settle()` runs when it has finished and counts its tokens.

- rpm: fixed one-minute windows; exactly `rpm` requests pass in a window.
- tpm: tokens finished in the current minute; a request is refused once they reach `tpm`.
- token budgets: tokens this calendar month (UTC) and in all; a request is refused once they
  reach the budget. The counter starts from the usage records in the database and every
  finished request adds its tokens atomically, so concurrent requests can overshoot only by
  what those already in flight when the budget was reached go on to use.
- max_parallel: requests in flight, taken in `admit()` and given back in `settle()`.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.db.models import Sum


@dataclass(frozen=True)
class KeyLimits:
    rpm: int | None = None
    tpm: int | None = None
    token_budget: int | None = None
    lifetime_token_budget: int | None = None
    max_parallel: int | None = None


NO_LIMITS = KeyLimits()


class Refusal(Exception):
    """A request over one of its key's limits. `kind`: requests, tokens, parallel, budget."""

    def __init__(self, kind: str, message: str, retry_after: int, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = max(1, retry_after)
        self.headers = headers


@dataclass
class Admission:
    key_id: int
    user_id: int
    limits: KeyLimits
    headers: dict[str, str] = field(default_factory=dict)
    holds_slot: bool = False


def _cache():
    return caches["default"]


def _local() -> bool:
    return isinstance(_cache(), LocMemCache)


async def _call(function, *args):
    # An in-process cache does no I/O: called directly, it saves a thread hop per call.
    # (Django's async cache methods are thread hops too, and its aincr is not atomic.)
    return function(*args) if _local() else await sync_to_async(function)(*args)


def _count_up(key: str, delta: int, ttl: int) -> int:
    cache = _cache()
    for _ in range(2):  # the key may expire between add and incr
        cache.add(key, 0, ttl)
        try:
            return cache.incr(key, delta)  # atomic: Redis INCR, or under the local cache's lock
        except ValueError:
            continue
    raise RuntimeError(f"cannot count {key}")


def _count_up_if_present(key: str, delta: int) -> None:
    # A counter not in the cache starts from the database next time, this request included.
    with contextlib.suppress(ValueError):
        _cache().incr(key, delta)


def _start_at(key: str, value: int, ttl: int) -> int:
    cache = _cache()
    cache.add(key, value, ttl)
    return cache.get(key, value)


async def _incr(key: str, delta: int, ttl: int) -> int:
    return await _call(_count_up, key, delta, ttl)


async def _get(key: str) -> int | None:
    return await _call(_cache().get, key)


def _reset_text(seconds: float) -> str:
    minutes, rest = divmod(max(0, math.ceil(seconds)), 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def _month(now: float) -> tuple[str, datetime, int]:
    """This month's tag, its first instant, and seconds until the next one (UTC)."""
    today = datetime.fromtimestamp(now, UTC)
    start = today.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = calendar.monthrange(today.year, today.month)[1]
    return today.strftime("%Y%m"), start, math.ceil(start.timestamp() + days * 86400 - now)


def _tokens_in_db(key_id: int, since: datetime | None) -> int:
    from accounts.models import UsageRecord

    records = UsageRecord.objects.filter(api_key_id=key_id)
    if since is not None:
        records = records.filter(created_at__gte=since)
    return records.aggregate(total=Sum("total_tokens"))["total"] or 0


async def _budget_used(key: str, key_id: int, since: datetime | None, ttl: int) -> int:
    used = await _get(key)
    if used is None:
        # First look in this cache: start from what the database has recorded.
        counted = await sync_to_async(_tokens_in_db)(key_id, since)
        used = await _call(_start_at, key, counted, ttl)
    return used


async def admit(key_id: int, user_id: int, limits: KeyLimits) -> Admission:
    """Count the request against its key's limits, or raise `Refusal`."""
    admission = Admission(key_id=key_id, user_id=user_id, limits=limits)
    if limits == NO_LIMITS:
        return admission
    now = time.time()
    minute = int(now // 60)
    reset = 60 - now % 60
    headers = admission.headers
    if limits.rpm is not None:
        count = await _incr(f"hfp:rpm:{key_id}:{minute}", 1, 120)
        headers.update(
            {
                "x-ratelimit-limit-requests": str(limits.rpm),
                "x-ratelimit-remaining-requests": str(max(0, limits.rpm - count)),
                "x-ratelimit-reset-requests": _reset_text(reset),
            }
        )
        if count > limits.rpm:
            raise Refusal(
                "requests",
                f"Rate limit reached: {limits.rpm} requests per minute.",
                math.ceil(reset),
                headers,
            )
    if limits.tpm is not None:
        used = await _get(f"hfp:tpm:{key_id}:{minute}") or 0
        headers.update(
            {
                "x-ratelimit-limit-tokens": str(limits.tpm),
                "x-ratelimit-remaining-tokens": str(max(0, limits.tpm - used)),
                "x-ratelimit-reset-tokens": _reset_text(reset),
            }
        )
        if used >= limits.tpm:
            raise Refusal(
                "tokens", f"Rate limit reached: {limits.tpm} tokens per minute.", math.ceil(reset), headers
            )
    if limits.token_budget is not None:
        tag, start, until_next = _month(now)
        used = await _budget_used(f"hfp:month:{key_id}:{tag}", key_id, start, until_next + 3600)
        if used >= limits.token_budget:
            raise Refusal(
                "budget", f"Monthly token budget of {limits.token_budget} used up.", until_next, headers
            )
    if limits.lifetime_token_budget is not None:
        used = await _budget_used(f"hfp:life:{key_id}", key_id, None, 30 * 86400)
        if used >= limits.lifetime_token_budget:
            raise Refusal(
                "budget", f"Lifetime token budget of {limits.lifetime_token_budget} used up.", 86400, headers
            )
    if limits.max_parallel is not None:
        key = f"hfp:par:{key_id}"
        if await _incr(key, 1, int(settings.REQUEST_TIMEOUT) + 120) > limits.max_parallel:
            await _incr(key, -1, int(settings.REQUEST_TIMEOUT) + 120)
            raise Refusal(
                "parallel", f"Too many requests in flight: at most {limits.max_parallel}.", 1, headers
            )
        admission.holds_slot = True
    return admission


async def asettle(admission: Admission, tokens: int) -> None:
    """The request is over: give back its slot and count its tokens."""
    key_id, limits = admission.key_id, admission.limits
    if admission.holds_slot:
        admission.holds_slot = False
        await _incr(f"hfp:par:{key_id}", -1, int(settings.REQUEST_TIMEOUT) + 120)
    if not tokens:
        return
    now = time.time()
    if limits.tpm is not None:
        await _incr(f"hfp:tpm:{key_id}:{int(now // 60)}", tokens, 120)
    if limits.token_budget is not None:
        tag = _month(now)[0]
        await _call(_count_up_if_present, f"hfp:month:{key_id}:{tag}", tokens)
    if limits.lifetime_token_budget is not None:
        await _call(_count_up_if_present, f"hfp:life:{key_id}", tokens)


_settling: set[asyncio.Task] = set()


def settle(admission: Admission | None, tokens: int) -> None:
    """`asettle` from synchronous code (a request's finish), without waiting for it."""
    if admission is None or (not admission.holds_slot and not tokens) or admission.limits == NO_LIMITS:
        return
    task = asyncio.get_running_loop().create_task(asettle(admission, tokens))
    _settling.add(task)
    task.add_done_callback(_settling.discard)
