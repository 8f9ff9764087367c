"""Retention: usage records older than N days go, a whole UTC day per statement.

Nothing that counts usage notices: every total (budgets, reports, the API, the dashboard) reads
the rollups (`UsageRollup`), and the dashboard's percentiles the histograms (`UsageHistogram`),
which the database keeps as records are inserted and which pruning leaves as they are. The floor
on N keeps a month of records for the admin's usage list.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.utils import timezone

from accounts.models import UsageRecord

MIN_DAYS = 32


@dataclass
class Pruned:
    days: int = 0
    records: int = 0
    cutoff: datetime | None = None


def _day_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def prune(older_than_days: int, *, now: datetime | None = None, dry_run: bool = False) -> Pruned:
    """Delete the records of every whole UTC day that ended more than N days ago."""
    if older_than_days < MIN_DAYS:
        raise ValueError(f"Records are kept at least {MIN_DAYS} days (the usage list shows a month of them).")
    cutoff = _day_start((now or timezone.now()) - timedelta(days=older_than_days))
    pruned = Pruned(cutoff=cutoff)
    old = UsageRecord.objects.filter(created_at__lt=cutoff)
    if dry_run:
        pruned.records = old.count()
        pruned.days = old.datetimes("created_at", "day", tzinfo=UTC).count()
        return pruned
    # A day at a time: each statement, and the locks it holds, stays a day's size.
    while (oldest := old.order_by("created_at").values_list("created_at", flat=True).first()) is not None:
        start = _day_start(oldest)
        deleted, _ = old.filter(created_at__gte=start, created_at__lt=start + timedelta(days=1)).delete()
        pruned.days += 1
        pruned.records += deleted
    return pruned
