"""Retention: usage records older than N days become daily sums (`UsageDaily`), then go.

A day at a time, each in one transaction: its records are summed per key, endpoint, model and
outcome into the day's rows (added to, should a day be pruned twice), then deleted. The rows
say what was pruned; every total (budgets, reports, the API, the dashboard) reads the rollups
(`UsageRollup`), and the dashboard's percentiles the histograms (`UsageHistogram`), which
pruning leaves as they are. The floor on N keeps a month of records for the admin's usage list.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Count, DecimalField, F, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import UsageDaily, UsageRecord
from accounts.selectors import cost_sum

MIN_DAYS = 32
_SUMS = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens")
_UNITS = Coalesce(Sum("units"), Value(Decimal(0)), output_field=DecimalField(max_digits=20, decimal_places=3))
_GROUP = ("user_id", "api_key_id", "endpoint", "model_requested", "outcome")


class ConcurrentPrune(Exception):
    """Two prunes ran at once; the day's transaction is rolled back, nothing is counted twice."""


@dataclass
class Pruned:
    days: int = 0
    records: int = 0
    groups: int = 0
    cutoff: datetime | None = None


def _day_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def prune(older_than_days: int, *, now: datetime | None = None, dry_run: bool = False) -> Pruned:
    """Sum and delete the records of every whole UTC day that ended more than N days ago."""
    if older_than_days < MIN_DAYS:
        raise ValueError(f"Records are kept at least {MIN_DAYS} days (monthly budgets read them).")
    cutoff = _day_start((now or timezone.now()) - timedelta(days=older_than_days))
    pruned = Pruned(cutoff=cutoff)
    old = UsageRecord.objects.filter(created_at__lt=cutoff)
    if dry_run:
        pruned.records = old.count()
        pruned.days = old.datetimes("created_at", "day", tzinfo=UTC).count()
        return pruned
    while (oldest := old.order_by("created_at").values_list("created_at", flat=True).first()) is not None:
        start = _day_start(oldest)
        groups, records = _prune_day(start, min(start + timedelta(days=1), cutoff))
        pruned.days += 1
        pruned.groups += groups
        pruned.records += records
    return pruned


@transaction.atomic
def _prune_day(start: datetime, end: datetime) -> tuple[int, int]:
    records = UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)
    groups = list(
        records.values(*_GROUP).annotate(
            requests=Count("id"), cost_usd=cost_sum(), units=_UNITS,
            **{name: Coalesce(Sum(name), 0) for name in _SUMS},
        ).order_by()
    )  # fmt: skip
    for group in groups:
        key = {name: group[name] for name in _GROUP if name != "user_id"}
        row, _ = UsageDaily.objects.select_for_update().get_or_create(
            day=start.date(), **key, defaults={"user_id": group["user_id"]}
        )
        UsageDaily.objects.filter(pk=row.pk).update(
            requests=F("requests") + group["requests"],
            cost_usd=F("cost_usd") + group["cost_usd"],
            units=F("units") + group["units"],
            **{name: F(name) + group[name] for name in _SUMS},
        )
    deleted, _ = records.delete()
    summed = sum(group["requests"] for group in groups)
    if deleted != summed:
        # Another prune summed and deleted some of these meanwhile: its sums stand, ours go.
        raise ConcurrentPrune(f"{start:%Y-%m-%d}: summed {summed} records but deleted {deleted}")
    return len(groups), deleted
