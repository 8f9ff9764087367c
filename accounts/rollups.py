"""Usage totals read from the rollups (`UsageRollup`) instead of the records, exactly.

A time range is cut into pieces: whole days read from the daily rollups, the whole hours at its
edges from the hourly ones, and what is left at each end (less than an hour) from the records
themselves, by their time index. Totals of every key (or of a team's) read the rollups kept
without keys, users, endpoints or models ("H", "D"). So a total over any range equals the records' sum, at the cost
of a few dozen rollup rows a day instead of every record; and records pruned since still count.

Every piece counts errors, refusals and bad requests apart, in the same query, by the same rules
as the records' totals (accounts.selectors).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, Sum

from accounts.models import Outcome, UsageRecord, UsageRollup
from accounts.prices import CENT_MILLIONTHS
from accounts.selectors import UPSTREAM_FAILURES

HOUR, DAY = timedelta(hours=1), timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# What every total carries; errors, refused and bad_requests are requests of some outcomes.
SUMS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "with_ttft")
_OUTCOMES = {
    "errors": UPSTREAM_FAILURES,
    "refused": Q(outcome=Outcome.REFUSED),
    "bad_requests": Q(outcome=Outcome.BAD_REQUEST),
}
COUNTS = (*SUMS, *_OUTCOMES)
_RECORD_SUMS = {
    "requests": Count("*"),
    **{name: Sum(name) for name in SUMS[1:-1]},
    "with_ttft": Count("ttft_ms"),
    **{name: Count("outcome", filter=which) for name, which in _OUTCOMES.items()},
}
_ROLLUP_SUMS = {
    **{name: Sum(name) for name in SUMS},
    **{name: Sum("requests", filter=which) for name, which in _OUTCOMES.items()},
}


def floor(moment: datetime, unit: timedelta) -> datetime:
    return _EPOCH + (moment - _EPOCH) // unit * unit


def ceil(moment: datetime, unit: timedelta) -> datetime:
    below = floor(moment, unit)
    return below if below == moment else below + unit


@dataclass(frozen=True)
class Piece:
    """Part of a range read from one source: "records", or the rollups of a span ("h", "d").
    None: unbounded."""

    source: str
    start: datetime | None
    end: datetime | None


def pieces(since: datetime | None, until: datetime | None, grain: timedelta = DAY) -> list[Piece]:
    """[since, until) as records at the ragged ends, whole hours, and (grain DAY) whole days."""
    if since is not None and until is not None and since >= until:
        return []
    first_hour = None if since is None else ceil(since, HOUR)
    if since is not None and until is not None and first_hour >= until:
        return [Piece("records", since, until)]
    last_hour = None if until is None else floor(until, HOUR)
    found = [Piece("records", since, first_hour)] if since is not None and since < first_hour else []
    if grain == DAY:
        first_day = None if first_hour is None else ceil(first_hour, DAY)
        last_day = None if last_hour is None else floor(last_hour, DAY)
        if first_day is None or last_day is None or first_day < last_day:
            if first_hour is not None and first_hour < first_day:
                found.append(Piece("h", first_hour, first_day))
            found.append(Piece("d", first_day, last_day))
            if last_day is None:
                return found
            first_hour = last_day
    if first_hour is None or last_hour is None or first_hour < last_hour:
        found.append(Piece("h", first_hour, last_hour))
    if last_hour is not None and last_hour < until:
        found.append(Piece("records", last_hour, until))
    return found


def _query(piece: Piece, by: tuple[str, ...], per_start: bool, filters: dict[str, Any]):
    if piece.source == "records":
        rows, time, sums = UsageRecord.objects.filter(**filters), "created_at", _RECORD_SUMS
    else:
        # Totals of every key (or a team's) read the rollups without keys: far fewer rows.
        every_key = not set(by) - {"team_id", "outcome"} and not set(filters) - {"team_id"}
        span = piece.source.upper() if every_key else piece.source
        rows, time, sums = UsageRollup.objects.filter(span=span, **filters), "start", _ROLLUP_SUMS
    if piece.start is not None:
        rows = rows.filter(**{f"{time}__gte": piece.start})
    if piece.end is not None:
        rows = rows.filter(**{f"{time}__lt": piece.end})
    # Not grouped by outcome: the outcomes' counts are summed in the same pass (a quarter of
    # the rows to send and add up).
    columns = (*by, *(("start",) if per_start and piece.source != "records" else ()))
    # Aliased: an annotation may not take a column's name.
    aliased = {f"sum_{name}": value for name, value in sums.items()}
    if not columns:  # one total (values() without columns would group by every column)
        return [rows.order_by().aggregate(**aliased)]
    return rows.order_by().values(*columns).annotate(**aliased)


def totals(
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    by: Iterable[str] = (),
    bucket: Callable[[datetime], Any] | None = None,
    grain: timedelta = DAY,
    user_id: int | None = None,
    team_id: int | None = None,
    api_key_ids: Iterable[int] | None = None,
) -> dict[tuple, dict]:
    """The usage in [since, until) (None: unbounded) of a user, a team or keys, summed per value
    of the `by` columns (of both UsageRecord and UsageRollup: api_key_id, user_id, team_id,
    endpoint, model_requested, outcome) and, with `bucket`, per `bucket(moment)` (the key's first
    part), where a moment is an hour's or a day's start: `grain` HOUR when the buckets do not
    hold whole days. Each value: SUMS, errors (of requests that reached the router), refused and
    bad_requests."""
    by = tuple(by)
    filters: dict[str, Any] = {}
    if user_id is not None:
        filters["user_id"] = user_id
    if team_id is not None:
        filters["team_id"] = team_id
    if api_key_ids is not None:
        filters["api_key_id__in"] = list(api_key_ids)
    found: dict[tuple, dict] = {}
    for piece in pieces(since, until, grain):
        for row in _query(piece, by, bucket is not None, filters):
            group = tuple(row[name] for name in by)
            if bucket is not None:
                # Records are read at the ragged ends only: within an hour, one bucket's.
                group = (bucket(row["start"] if piece.source != "records" else piece.start), *group)
            total = found.get(group)
            if total is None:
                total = found[group] = nothing()
            for name in COUNTS:
                value = row[f"sum_{name}"]
                if value:
                    total[name] += Decimal(value) if name == "cost_usd" else value
    for total in found.values():
        # SQLite sums decimals as floats: back to the column's exact cents-millionths.
        total["cost_usd"] = total["cost_usd"].quantize(CENT_MILLIONTHS)
    return found


def nothing() -> dict:
    """A total of no usage."""
    return {
        **dict.fromkeys(COUNTS, 0),
        "cost_usd": Decimal(0).quantize(CENT_MILLIONTHS),
    }


def total(**options) -> dict:
    """`totals()` without groups: one total."""
    return totals(**options).get(()) or nothing()


def in_buckets(edges: list[datetime]) -> Callable[[datetime], int]:
    """For `totals(bucket=…)`: the index of the bucket a moment falls in, buckets starting at
    `edges` (the last one unbounded)."""
    return lambda moment: max(0, bisect.bisect_right(edges, moment) - 1)


def day_of(moment: datetime):
    return floor(moment, DAY).date()
