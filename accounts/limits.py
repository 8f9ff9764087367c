"""Rate limits, concurrency and token budgets: what a key may still do, and counting what it did.

`admit()` runs before a request goes upstream and refuses it with `Refusal`; `settle()` runs
when it has finished and counts its tokens. Each is one batch of counter operations (one Redis
round trip when the counters are shared: `accounts.counters`).

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
import functools
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from django.conf import settings
from django.db.models import Subquery, Sum, Value
from django.db.models.functions import Coalesce

from accounts import counters, offloop, runtime
from accounts.counters import Op


@dataclass(frozen=True)
class KeyLimits:
    rpm: int | None = None
    tpm: int | None = None
    token_budget: int | None = None
    lifetime_token_budget: int | None = None
    usd_budget: Decimal | None = None
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


def _reset_text(seconds: float) -> str:
    minutes, rest = divmod(max(0, math.ceil(seconds)), 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def _month(now: float) -> tuple[str, datetime, int]:
    """This month's tag, its first instant, and seconds until the next one (UTC)."""
    tag, start, next_start = _month_of_minute(int(now // 60))
    return tag, start, math.ceil(next_start - now)


@functools.lru_cache(maxsize=4)
def _month_of_minute(minute: int) -> tuple[str, datetime, float]:
    # Months begin on a minute: computed once a minute, not for every request.
    today = datetime.fromtimestamp(minute * 60, UTC)
    start = today.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = calendar.monthrange(today.year, today.month)[1]
    return today.strftime("%Y%m"), start, start.timestamp() + days * 86400


def _sum_in_db(key_id: int, since: datetime | None, column: str) -> Decimal | int:
    """The key's `column` summed since then: its records, and the daily sums of pruned ones
    (whole days), in one statement, so that a prune committing meanwhile cannot count a day twice."""
    from accounts.models import ApiKey, UsageDaily, UsageRecord

    records = UsageRecord.objects.filter(api_key_id=key_id)
    days = UsageDaily.objects.filter(api_key_id=key_id)
    if since is not None:
        records = records.filter(created_at__gte=since)
        days = days.filter(day__gte=since.date())

    def total(rows):
        summed = rows.values("api_key_id").annotate(t=Sum(column)).values("t")
        return Coalesce(Subquery(summed), Value(0), output_field=rows.model._meta.get_field(column))

    found = ApiKey.objects.filter(pk=key_id).values_list(total(records) + total(days), flat=True).first()
    return found or 0


def _tokens_in_db(key_id: int, since: datetime | None) -> int:
    return int(_sum_in_db(key_id, since, "total_tokens"))


# USD budgets are counted in millionths of a dollar: counters hold integers.
MICRO = 1_000_000


def _usd_counter(key_id: int, month_tag: str) -> str:
    return f"usd:{key_id}:{month_tag}"


def _microdollars_in_db(key_id: int, since: datetime) -> int:
    """The key's cost since then in millionths of a dollar, rounded up."""
    return math.ceil(Decimal(_sum_in_db(key_id, since, "cost_usd")) * MICRO)


async def add_costs(costs: list[tuple[int, datetime, Decimal]]) -> None:
    """Written records' costs (key, when, USD) into the keys' USD budget counters: those that
    are counting (a budget seeded them); for others nothing changes. Called by the usage writer:
    a cost is known once its record is priced."""
    ops: list[Op] = [
        ("bump", _usd_counter(key_id, _month(when.timestamp())[0]), math.ceil(cost * MICRO))
        for key_id, when, cost in costs
        if cost
    ]
    if ops:
        await counters.store().run(ops)


def _parallel(key_id: int) -> tuple[str, int]:
    return f"par:{key_id}", int(settings.REQUEST_TIMEOUT) + 120


async def admit(key_id: int, user_id: int, limits: KeyLimits) -> Admission:
    """Count the request against its key's limits, or raise `Refusal`."""
    admission = Admission(key_id=key_id, user_id=user_id, limits=limits)
    if limits == NO_LIMITS:
        return admission
    now = time.time()
    minute = int(now // 60)
    reset = 60 - now % 60
    tag, month_start, until_next_month = _month(now)
    parallel_key, parallel_ttl = _parallel(key_id)
    # Every counter this request touches, read or taken in one batch (one Redis round trip).
    ops: dict[str, Op] = {}
    if limits.rpm is not None:
        ops["rpm"] = ("add", f"rpm:{key_id}:{minute}", 1, 120)
    if limits.tpm is not None:
        ops["tpm"] = ("get", f"tpm:{key_id}:{minute}")
    if limits.token_budget is not None:
        ops["month"] = ("get", f"month:{key_id}:{tag}")
    if limits.lifetime_token_budget is not None:
        ops["life"] = ("get", f"life:{key_id}")
    if limits.usd_budget is not None:
        ops["usd"] = ("get", _usd_counter(key_id, tag))
    if limits.max_parallel is not None:
        ops["parallel"] = ("add", parallel_key, 1, parallel_ttl)
    store = counters.store()
    seen = dict(zip(ops, await store.run(list(ops.values())), strict=True))
    admission.holds_slot = "parallel" in seen
    try:
        _check(limits, seen, admission.headers, reset, until_next_month)
        # A budget not yet counted here starts from what the database has recorded.
        for name, count, since, ttl in (
            ("month", _tokens_in_db, month_start, until_next_month + 3600),
            ("life", _tokens_in_db, None, 30 * 86400),
            ("usd", _microdollars_in_db, month_start, until_next_month + 3600),
        ):
            if name in seen and seen[name] is None:
                counted = await offloop.run(count, key_id, since)
                seen[name] = (await store.run([("seed", ops[name][1], counted, ttl)]))[0]
        _check(limits, seen, admission.headers, reset, until_next_month)
    except BaseException:  # refused, the database failed, or the client left meanwhile
        if admission.holds_slot:
            admission.holds_slot = False
            # Shielded: a cancelled request must still give its slot back.
            await asyncio.shield(store.run([("add", parallel_key, -1, parallel_ttl)]))
        raise
    return admission


def _check(
    limits: KeyLimits, seen: dict, headers: dict[str, str], reset: float, until_next_month: int
) -> None:
    """Refuse (raise `Refusal`) on the first limit the counters `seen` are over."""
    if "rpm" in seen:
        count = seen["rpm"]
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
    if "tpm" in seen:
        used = seen["tpm"] or 0
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
    if limits.token_budget is not None and (seen.get("month") or 0) >= limits.token_budget:
        raise Refusal(
            "budget", f"Monthly token budget of {limits.token_budget} used up.", until_next_month, headers
        )
    if limits.lifetime_token_budget is not None and (seen.get("life") or 0) >= limits.lifetime_token_budget:
        raise Refusal(
            "budget", f"Lifetime token budget of {limits.lifetime_token_budget} used up.", 86400, headers
        )
    if limits.usd_budget is not None and (seen.get("usd") or 0) >= limits.usd_budget * MICRO:
        raise Refusal("budget", f"Monthly budget of ${limits.usd_budget} used up.", until_next_month, headers)
    if limits.max_parallel is not None and seen["parallel"] > limits.max_parallel:
        raise Refusal("parallel", f"Too many requests in flight: at most {limits.max_parallel}.", 1, headers)


async def asettle(admission: Admission, tokens: int) -> None:
    """The request is over: give back its slot and count its tokens (one batch)."""
    key_id, limits = admission.key_id, admission.limits
    ops: list[Op] = []
    if admission.holds_slot:
        admission.holds_slot = False
        key, ttl = _parallel(key_id)
        ops.append(("add", key, -1, ttl))
    if tokens:
        now = time.time()
        if limits.tpm is not None:
            ops.append(("add", f"tpm:{key_id}:{int(now // 60)}", tokens, 120))
        if limits.token_budget is not None:
            ops.append(("bump", f"month:{key_id}:{_month(now)[0]}", tokens))
        if limits.lifetime_token_budget is not None:
            ops.append(("bump", f"life:{key_id}", tokens))
    if ops:
        await counters.store().run(ops)


def settle(admission: Admission | None, tokens: int) -> None:
    """`asettle` from synchronous code (a request's finish), without waiting for it."""
    if admission is None or (not admission.holds_slot and not tokens) or admission.limits == NO_LIMITS:
        return
    runtime.spawn(asettle(admission, tokens))
