"""The usage dashboard's figures, every one computed by the database (`accounts.dashboard_page`
lays them out for the page).

A page costs a fixed number of queries, whatever the number of rows: a few for the time series
(whose buckets also give the totals) and for each top list, read from the hourly and daily
rollups (accounts.rollups), a few for the percentiles, read from the hourly and daily histograms
(accounts.histograms), and one for the refusals by reason. A range's ragged ends, under an hour,
are read from the records, by their time index; bench/dashboard.py measures them.

The percentiles are approximate, by design: the nearest-rank percentile's bucket is exact, and
the value shown is that bucket's representative, exact below 10 ms, at most 4 ms off below
100 ms and at most 4.9 % off above (accounts.histograms). Every other figure is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts import histograms, rollups
from accounts.models import Outcome
from accounts.selectors import UPSTREAM_FAILURES, cost_sum, usage_in


@dataclass(frozen=True)
class Period:
    key: str
    label: str
    span: timedelta
    step: timedelta
    step_name: str


PERIODS = {
    period.key: period
    for period in (
        Period("24h", "24 hours", timedelta(hours=24), timedelta(hours=1), "hour"),
        Period("7d", "7 days", timedelta(days=7), timedelta(hours=6), "6 hours"),
        Period("30d", "30 days", timedelta(days=30), timedelta(days=1), "day"),
    )
}
DEFAULT_PERIOD = "24h"

# Count("*") and the counted columns, never the primary key: an index holding the time,
# outcome, tokens and time to first token then answers without reading the table.
# Errors are failures of requests that reached the router; refusals by policy are counted
# apart (a healthy upstream behind tight rate limits is not failing), bad requests too.
TOTALS = {
    "requests": Count("*"),
    "tokens": Coalesce(Sum("total_tokens"), 0),
    "cost": cost_sum(),
    "errors": Count("outcome", filter=UPSTREAM_FAILURES),
    "refused": Count("outcome", filter=Q(outcome=Outcome.REFUSED)),
    "bad_requests": Count("outcome", filter=Q(outcome=Outcome.BAD_REQUEST)),
}
SERIES_TOTALS = {**TOTALS, "with_ttft": Count("ttft_ms")}


def bucket_edges(since: datetime, until: datetime, step: timedelta) -> list[datetime]:
    """`since`, then every multiple of `step` since the epoch (UTC) before `until`: where the
    buckets begin."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    edges = [since]
    edge = epoch + (since - epoch) // step * step + step
    while edge < until:
        edges.append(edge)
        edge += step
    return edges


def usage_series(
    *,
    since: datetime,
    until: datetime,
    step: timedelta,
    team_id: int | None = None,
    user_id: int | None = None,
) -> list[dict]:
    """TOTALS and the requests with a time to first token, per hour or day since `since`.

    From the rollups (accounts.rollups): each bucket but the first starts on a multiple of
    `step`, so holds whole hours (whole days when `step` is days), and the first bucket's
    ragged start is read from the records. The last bucket has no end, so the series counts
    the same rows as the other queries."""
    edges = bucket_edges(since, until, step)
    found = rollups.totals(
        since=since,
        bucket=rollups.in_buckets(edges),
        grain=rollups.DAY if step % rollups.DAY == timedelta(0) else rollups.HOUR,
        team_id=team_id,
        user_id=user_id,
    )
    return [
        {
            "start": start,
            **_named(found.get((index,))),
            "with_ttft": found.get((index,), {}).get("with_ttft", 0),
        }
        for index, start in enumerate(edges)
    ]


def _named(total: dict | None) -> dict:
    """A rollups total in TOTALS' names."""
    total = total or rollups.nothing()
    return {
        "requests": total["requests"],
        "tokens": total["total_tokens"],
        "cost": total["cost_usd"],
        "errors": total["errors"],
        "refused": total["refused"],
        "bad_requests": total["bad_requests"],
    }


def usage_top(*, since: datetime, by: str, limit: int = 10, team_id: int | None = None) -> list[dict]:
    """The `limit` biggest callers (by="user_id") or models (by="model_requested") since `since`."""
    found = rollups.totals(since=since, by=(by,), team_id=team_id)
    rows = [{by: group[0], **_named(total)} for group, total in found.items()]
    rows.sort(key=lambda row: (-row["requests"], row[by]))
    return rows[:limit]


@dataclass
class Dashboard:
    period: Period
    since: datetime
    until: datetime
    series: list[dict]
    top_users: list[dict]
    top_models: list[dict]
    requests: int = 0
    tokens: int = 0
    cost: Decimal = Decimal(0)
    errors: int = 0
    refused_total: int = 0  # refused by policy
    bad_requests: int = 0
    latency: dict[str, int | None] = field(default_factory=dict)
    ttft: dict[str, int | None] = field(default_factory=dict)
    refused: list[dict] = field(default_factory=list)  # requests refused by policy, by reason

    @property
    def error_rate(self) -> float | None:
        return error_rate(
            errors=self.errors,
            requests=self.requests,
            refused=self.refused_total,
            bad_requests=self.bad_requests,
        )


def error_rate(*, errors: int, requests: int, refused: int, bad_requests: int) -> float | None:
    """The share of failures among the requests that reached the router (TOTALS' names):
    refused and bad requests never went upstream."""
    sent_upstream = requests - refused - bad_requests
    return errors / sent_upstream if sent_upstream else None


def _percentiles(counted) -> dict[str, int | None]:
    return {"p50": histograms.percentile(counted, 0.50), "p95": histograms.percentile(counted, 0.95)}


def usage_dashboard(
    *, period: str = DEFAULT_PERIOD, now: datetime | None = None, team_id: int | None = None
) -> Dashboard:
    """Every figure of the dashboard for the `period` (a key of PERIODS) that ends `now`: of
    every request, or of the team's (`team_id`)."""
    chosen = PERIODS[period]
    until = now or timezone.now()
    since = until - chosen.span
    series = usage_series(since=since, until=until, step=chosen.step, team_id=team_id)
    top_users = usage_top(since=since, by="user_id", team_id=team_id)
    user_model = get_user_model()
    names = dict(
        user_model.objects.filter(pk__in=[row["user_id"] for row in top_users]).values_list(
            "pk", user_model.USERNAME_FIELD
        )
    )
    for row in top_users:
        row["user"] = names.get(row["user_id"], f"#{row['user_id']}")
    # The totals are the buckets' sums: no second pass over the rows.
    requests = sum(point["requests"] for point in series)
    records = usage_in(since=since, team_id=team_id)
    counted = histograms.counts(since=since, team_id=team_id)
    return Dashboard(
        period=chosen,
        since=since,
        until=until,
        series=series,
        top_users=top_users,
        top_models=usage_top(since=since, by="model_requested", team_id=team_id),
        requests=requests,
        tokens=sum(point["tokens"] for point in series),
        cost=sum((point["cost"] for point in series), Decimal(0)),
        errors=sum(point["errors"] for point in series),
        refused_total=sum(point["refused"] for point in series),
        bad_requests=sum(point["bad_requests"] for point in series),
        latency=_percentiles(counted["latency_ms"]),
        ttft=_percentiles(counted["ttft_ms"]),
        refused=list(
            records.filter(outcome=Outcome.REFUSED)
            .values("error_code")
            .annotate(requests=Count("*"))
            .order_by("-requests", "error_code")
        ),
    )
