"""Rate limits, concurrency and token budgets: what a key may still do, and counting what it did.

`admit()` runs before a request goes upstream and refuses it with `Refusal`; `settle()` runs
when it has finished and counts its tokens. Each is one batch of counter operations (one Redis
round trip when the counters are shared: `accounts.counters`).

- rpm: fixed one-minute windows; exactly `rpm` requests pass in a window.
- tpm: tokens finished in the current minute; a request is refused once they reach `tpm`.
- budgets (tokens this calendar month (UTC) and in all, USD this month): caps. A request
  reserves what it may use (`Reservation`: its prompt's estimate plus the most it may generate,
  and their cost) in the same atomic batch that checks the budget, and is refused when that does
  not fit in what is left; when it ends, the reservation is replaced by what it used. So
  concurrent requests overshoot a budget only by what one went past its own reservation (a
  prompt underestimated, an answer longer than its reservation). A counter starts from the usage
  records in the database (its first request this month seeds it).
- max_parallel: requests in flight. A request takes a slot in `admit()` (a refusal takes
  none) and gives it back in `settle()`, retried while Redis does not answer; a slot never
  given back frees itself at its deadline, REQUEST_TIMEOUT + 120 s after it was taken.

With Redis unavailable, a request that needs it fails with `Unavailable` (a 503), or with
LIMITS_FAIL_OPEN is counted in its worker's memory (`counters.run`); a slot a lost reply may have
taken in Redis is given back either way.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import functools
import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from django.conf import settings

from accounts import counters, offloop
from accounts.counters import Op, Unavailable


@dataclass(frozen=True)
class KeyLimits:
    rpm: int | None = None
    tpm: int | None = None
    token_budget: int | None = None
    lifetime_token_budget: int | None = None
    usd_budget: Decimal | None = None
    max_parallel: int | None = None


NO_LIMITS = KeyLimits()


@dataclass(frozen=True)
class Reservation:
    """What a request may use at most, held against its key's budgets while it runs."""

    tokens: int = 0
    microdollars: int = 0  # its tokens' cost at the dearest price, in millionths of a dollar


NOTHING = Reservation()


@dataclass(frozen=True)
class Scope:
    """Limits a request counts against besides its key's: its user's on all their keys (no
    `team_id`), its team's (no `user_id`: budgets the team shares) or its member's within the
    team (the team's caps per member). Its rpm, tpm, token_budget and usd_budget apply; `label`
    names it in a refusal."""

    team_id: int | None
    label: str
    limits: KeyLimits
    user_id: int | None = None

    @property
    def name(self) -> str:
        """Its counters' namespace (a key's is its id)."""
        if self.team_id is None:
            return f"user{self.user_id}"
        return f"team{self.team_id}" if self.user_id is None else f"team{self.team_id}u{self.user_id}"

    def total(self, since: datetime, column: str) -> Decimal | int:
        """Its records' `column` (total_tokens, cost_usd) summed since then, from the rollups."""
        from accounts import rollups

        return rollups.total(since=since, team_id=self.team_id, user_id=self.user_id)[column]


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
    slot: str = field(default_factory=lambda: uuid.uuid4().hex)  # who holds it, in the key's slots
    store: counters.Store | None = None  # where it was counted (memory when Redis failed open)
    reservation: Reservation = NOTHING
    reserved: dict[str, int] = field(default_factory=dict)  # budget counter → what it holds for this request
    scopes: tuple[Scope, ...] = ()

    @property
    def tpm_counters(self) -> list[str]:
        """The namespaces whose tokens per minute count this request's tokens."""
        found = [str(self.key_id)] if self.limits.tpm is not None else []
        return found + [scope.name for scope in self.scopes if scope.limits.tpm is not None]


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
    """The key's `column` (total_tokens, cost_usd) summed since then, from the rollups: they
    count pruned records too, and pruning leaves them as they are, so it cannot make a total
    count a day twice or miss one."""
    from accounts import rollups

    return rollups.total(since=since, api_key_ids=[key_id])[column]


def _tokens_in_db(key_id: int, since: datetime | None) -> int:
    return int(_sum_in_db(key_id, since, "total_tokens"))


# USD budgets are counted in millionths of a dollar: counters hold integers.
MICRO = 1_000_000


def _usd_counter(key_id: int, month_tag: str) -> str:
    return f"usd:{key_id}:{month_tag}"


def _microdollars_in_db(key_id: int, since: datetime) -> int:
    """The key's cost since then in millionths of a dollar, rounded up."""
    return math.ceil(Decimal(_sum_in_db(key_id, since, "cost_usd")) * MICRO)


def _parallel(key_id: int) -> tuple[str, int]:
    """The key's slots, and how long a slot is held at most (a request lasts REQUEST_TIMEOUT)."""
    return f"slots:{key_id}", int(settings.REQUEST_TIMEOUT) + 120


async def _free(store: counters.Store, key: str, holder: str, ttl: int) -> None:
    """Give a slot back now, or (Redis not answering) later."""
    try:
        await store.run([("free", key, holder)])
    except Unavailable:
        _give_back_later(store, key, holder, ttl)


# Slots being given back: held here, but not waited for by a shutdown (runtime.spawn's would
# be), where the usage writer needs the time more; the slots' deadlines free those left.
_giving_back: set[asyncio.Task] = set()


def _give_back_later(store: counters.Store, key: str, holder: str, ttl: int) -> None:
    task = asyncio.get_running_loop().create_task(_give_back(store, key, holder, ttl))
    _giving_back.add(task)
    task.add_done_callback(_giving_back.discard)


async def _give_back(store: counters.Store, key: str, holder: str, ttl: int) -> None:
    """Every second until Redis takes it, or the slot's deadline has passed."""
    until = time.monotonic() + ttl
    while time.monotonic() < until:
        await asyncio.sleep(1)
        try:
            await store.run([("free", key, holder)])
            return
        except Unavailable:
            pass


async def _count(admission: Admission, ops: dict[str, Op]) -> dict[str, int | None]:
    """The admission's first batch, by name; where it ran is the admission's store."""

    def lost(where: counters.Store) -> None:
        # The reply was lost, maybe not the slot: freeing a slot not held does no harm. (A
        # reservation made all the same stays counted: a budget is over-counted, never under.)
        if "parallel" in ops:
            _, key, _, ttl, holder = ops["parallel"]
            _give_back_later(where, key, holder, ttl)

    admission.store, results = await counters.run(list(ops.values()), lost)
    seen = dict(zip(ops, results, strict=True))
    admission.holds_slot = seen.get("parallel") == 1
    return seen


async def admit(
    key_id: int,
    user_id: int,
    limits: KeyLimits,
    reservation: Reservation = NOTHING,
    scopes: tuple[Scope, ...] = (),
    holder: str | None = None,
) -> Admission:
    """Count the request against its key's limits and its `scopes`' (its team's), reserving
    `reservation` against every budget, all in one batch; or raise `Refusal`. `holder`: who holds
    its slot (the request's record id: a dead worker's replay gives it back, `free_slots`)."""
    scopes = tuple(scope for scope in scopes if scope.limits != NO_LIMITS)
    # The holder's id as the slot's, when given: no fresh one made to be thrown away.
    held_by = {"slot": holder} if holder else {}
    admission = Admission(
        key_id=key_id, user_id=user_id, limits=limits, reservation=reservation, scopes=scopes, **held_by
    )
    if limits == NO_LIMITS and not scopes:
        return admission
    now = time.time()
    minute = int(now // 60)
    reset = 60 - now % 60
    tag, month_start, until_next_month = _month(now)
    parallel_key, parallel_ttl = _parallel(key_id)
    # Every counter this request touches, read or taken in one batch (one Redis round trip):
    # the key's under bare names, each scope's under its name.
    ops: dict[str, Op] = {}
    if limits.lifetime_token_budget is not None:
        ops["life"] = ("reserve", f"life:{key_id}", reservation.tokens, limits.lifetime_token_budget)
    for prefix, namespace, rules in (
        ("", str(key_id), limits),
        *((f"{s.name}.", s.name, s.limits) for s in scopes),
    ):
        if rules.rpm is not None:
            ops[prefix + "rpm"] = ("add", f"rpm:{namespace}:{minute}", 1, 120)
        if rules.tpm is not None:
            ops[prefix + "tpm"] = ("get", f"tpm:{namespace}:{minute}")
        if rules.token_budget is not None:
            ops[prefix + "month"] = (
                "reserve",
                f"month:{namespace}:{tag}",
                reservation.tokens,
                rules.token_budget,
            )
        if rules.usd_budget is not None:
            budget = int(rules.usd_budget * MICRO)
            ops[prefix + "usd"] = ("reserve", _usd_counter(namespace, tag), reservation.microdollars, budget)
    if limits.max_parallel is not None:
        ops["parallel"] = ("take", parallel_key, limits.max_parallel, parallel_ttl, admission.slot)
    seen = await _count(admission, ops)
    store = admission.store

    def check(counts: dict) -> None:
        _check(limits, counts, admission.headers, reset, until_next_month, reservation)
        for scope in scopes:
            _check(scope.limits, counts, {}, reset, until_next_month, reservation, scope)

    try:
        _reserved(admission, ops, seen)
        budgets = {name: op for name, op in ops.items() if op[0] == "reserve"}
        uncounted = any(seen[name] is None for name in budgets)
        # With a budget not counted yet, none was reserved (all or nothing), so the others'
        # answers say nothing about whether they fit: only the rate and slot checks stand now.
        check({**seen, **dict.fromkeys(budgets)} if uncounted else seen)
        # A budget not yet counted here starts from what the database has recorded; then the
        # reservation is made (nothing was: a batch's reservations are all or nothing).
        if uncounted:
            for name in budgets:
                if seen[name] is None:
                    counted = await offloop.run(_seed, name, key_id, scopes, month_start)
                    ttl = 30 * 86400 if name == "life" else until_next_month + 3600
                    await store.run([("seed", ops[name][1], counted, ttl)])
            seen.update(zip(budgets, await store.run(list(budgets.values())), strict=True))
            _reserved(admission, budgets, seen)
            check(seen)
    except BaseException:  # refused, the database failed, or the client left meanwhile
        # Shielded: a cancelled request must still give its slot and its reservation back.
        await asyncio.shield(_undo(admission, parallel_key, parallel_ttl))
        raise
    return admission


def _seed(name: str, key_id: int, scopes: tuple[Scope, ...], month_start: datetime) -> int:
    """What a budget counter (by its name in the batch) starts from: the database's records."""
    prefix, _, kind = name.rpartition(".")
    if kind == "life":
        return _tokens_in_db(key_id, None)
    if not prefix:
        return (_tokens_in_db if kind == "month" else _microdollars_in_db)(key_id, month_start)
    scope = next(scope for scope in scopes if scope.name == prefix)
    if kind == "month":
        return int(scope.total(month_start, "total_tokens"))
    return math.ceil(Decimal(scope.total(month_start, "cost_usd")) * MICRO)


def _reserved(admission: Admission, ops: dict[str, Op], seen: dict) -> None:
    """Note what a batch reserved: every budget's amount when it succeeded (all or nothing)."""
    made = {ops[name][1]: ops[name][2] for name in ops if ops[name][0] == "reserve"}
    if made and all(seen[name] is not None and seen[name] >= 0 for name in ops if ops[name][0] == "reserve"):
        admission.reserved = made


async def _undo(admission: Admission, parallel_key: str, parallel_ttl: int) -> None:
    """An admission that failed gives back what it took: its slot and its reservation."""
    store = admission.store
    if admission.reserved:
        reserved, admission.reserved = admission.reserved, {}
        with contextlib.suppress(Unavailable):  # the counters' expiry is the last resort
            await store.run([("bump", key, -amount) for key, amount in reserved.items()])
    if admission.holds_slot:
        admission.holds_slot = False
        await _free(store, parallel_key, admission.slot, parallel_ttl)


def _check(
    limits: KeyLimits,
    seen: dict,
    headers: dict[str, str],
    reset: float,
    until_next_month: int,
    reservation: Reservation = NOTHING,
    scope: Scope | None = None,
) -> None:
    """Refuse (raise `Refusal`) on the first limit the counters `seen` are over: the key's, or
    `scope`'s (its counters named after it, its refusals saying whose limit it is)."""
    if scope is not None:
        seen = {
            name.removeprefix(f"{scope.name}."): v
            for name, v in seen.items()
            if name.startswith(f"{scope.name}.")
        }
        try:
            _check(limits, seen, headers, reset, until_next_month, reservation)
        except Refusal as refusal:
            raise Refusal(
                refusal.kind, f"{scope.label}: {refusal.message}", refusal.retry_after, refusal.headers
            ) from None
        return
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
    for name, budget, label in (
        ("month", limits.token_budget, "Monthly token budget"),
        ("life", limits.lifetime_token_budget, "Lifetime token budget"),
        ("usd", limits.usd_budget, "Monthly budget"),
    ):
        value = seen.get(name)
        if value is None or value >= 0:  # reserved, or not counted yet (seeded, then reserved)
            continue
        wait = 86400 if name == "life" else until_next_month
        raise Refusal(
            "budget", _over_budget(label, budget, -1 - value, reservation, name == "usd"), wait, headers
        )
    if limits.max_parallel is not None and not seen["parallel"]:
        raise Refusal("parallel", f"Too many requests in flight: at most {limits.max_parallel}.", 1, headers)


def _over_budget(label: str, budget, used: int, reservation: Reservation, usd: bool) -> str:
    """A budget refusal's message: used up, or not enough left for what the request may use."""
    if usd:
        amount, left = f"${budget}", f"${_dollars(budget * MICRO - used)}"
        need = f"cost up to ${_dollars(reservation.microdollars)}"
    else:
        amount, left, need = str(budget), str(budget - used), f"use up to {reservation.tokens} tokens"
    if used >= (budget * MICRO if usd else budget):
        return f"{label} of {amount} used up."
    return (
        f"{label} of {amount}: {left} left, and this request may {need} (its prompt and its "
        "max_tokens, or the server's default reservation when it sets none)."
    )


def _dollars(microdollars) -> Decimal:
    return (Decimal(microdollars) / MICRO).quantize(Decimal("0.000001"))


async def free_slots(held: list[tuple[int, str]]) -> None:
    """Give back the slots (key id, holder) of requests a dead worker was serving (its journal's
    replay): now rather than at their deadline. Redis not answering: the deadline does it."""
    if held:
        with contextlib.suppress(Unavailable):
            await counters.store().run([("free", _parallel(key_id)[0], holder) for key_id, holder in held])


def _settlement(admission: Admission, tokens: int, microdollars: int) -> tuple[list[Op], str | None, int]:
    """A finished request's counter operations: its slot back, its tokens per minute counted,
    its reservation replaced by what it used (in the month it was admitted in, as its record
    counts); and its slot's key and lifetime, if it held one."""
    key_id = admission.key_id
    ops: list[Op] = []
    slot, ttl = _parallel(key_id) if admission.holds_slot else (None, 0)
    if slot:
        admission.holds_slot = False
        ops.append(("free", slot, admission.slot))
    if tokens:
        minute = int(time.time() // 60)
        ops += [("add", f"tpm:{namespace}:{minute}", tokens, 120) for namespace in admission.tpm_counters]
    reserved, admission.reserved = admission.reserved, {}
    for key, amount in reserved.items():
        used = microdollars if key.startswith("usd:") else tokens
        if used != amount:
            ops.append(("bump", key, used - amount))
    return ops, slot, ttl


async def asettle(admission: Admission, tokens: int, microdollars: int = 0) -> None:
    """The request is over: give back its slot, count its tokens per minute, and replace its
    reservation by what it used (one batch, where it was admitted). Redis unavailable: the slot
    is given back later, the rest goes uncounted."""
    store = admission.store or counters.store()
    ops, slot, ttl = _settlement(admission, tokens, microdollars)
    if ops:
        try:
            await store.run_together(ops)  # one Redis call for the settlements of a loop's turn
        except Unavailable:
            if slot:
                _give_back_later(store, slot, admission.slot, ttl)


def settle(admission: Admission | None, tokens: int, microdollars: int = 0) -> None:
    """`asettle` from synchronous code (a request's finish), without waiting for it: its batch
    joins the loop's turn's call (`send_together`), with no task of its own."""
    if admission is None or (admission.limits == NO_LIMITS and not admission.scopes):
        return
    if not admission.holds_slot and not admission.reserved and not (tokens and admission.tpm_counters):
        return
    store = admission.store or counters.store()
    ops, slot, ttl = _settlement(admission, tokens, microdollars)
    if not ops:
        return
    holder = admission.slot

    def unavailable() -> None:
        if slot:
            _give_back_later(store, slot, holder, ttl)

    store.send_together(ops, unavailable)
