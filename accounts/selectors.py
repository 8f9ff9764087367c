"""Reads over usage: the queries the report, the dashboard and the API share."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from accounts.models import Outcome, UsageRecord

USAGE_TOTALS = {
    "requests": Count("id"),
    "prompt_tokens": Coalesce(Sum("prompt_tokens"), 0),
    "completion_tokens": Coalesce(Sum("completion_tokens"), 0),
    "total_tokens": Coalesce(Sum("total_tokens"), 0),
    "errors": Count("id", filter=~Q(outcome=Outcome.OK)),
}


def usage_in(*, since: datetime | None = None, user_id: int | None = None) -> QuerySet[UsageRecord]:
    records = UsageRecord.objects.all()
    if since is not None:
        records = records.filter(created_at__gte=since)
    if user_id is not None:
        records = records.filter(user_id=user_id)
    return records


def usage_by_user_and_model(*, since: datetime | None = None, user_id: int | None = None) -> list[dict]:
    """One row per (user, model requested): requests, tokens and errors, summed by the database."""
    rows = (
        usage_in(since=since, user_id=user_id)
        .values("user__username", "model_requested")
        .annotate(**USAGE_TOTALS)
        .order_by("user__username", "model_requested")
    )
    return [
        {
            "user": row.pop("user__username"),
            "model": row.pop("model_requested"),
            **row,
        }
        for row in rows
    ]
