"""Histograms of latency and time to first token: the buckets' precision, the trigger's buckets
against Python's at every edge, and the dashboard's percentiles against the records' exact ones."""

from __future__ import annotations

import math
import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext

import pytest
from django.contrib.auth import get_user_model
from django.db.models import Count

from accounts import dashboard, histograms, services
from accounts.models import HISTOGRAM_BAND, Outcome, Team, UsageHistogram, UsageRecord

NOW = datetime(2026, 3, 10, 12, 30, 17, tzinfo=UTC)


def test_the_edges_are_the_ceilings_of_the_powers_of_ten_to_the_24th():
    with localcontext() as exact:
        exact.prec = 50
        for k, edge in enumerate(histograms.EDGES[1:]):
            power = Decimal(10) ** ((Decimal(k) - Decimal("0.5")) / HISTOGRAM_BAND)
            assert edge - 1 < power <= edge, k


def test_each_bucket_reads_within_the_stated_precision():
    """Exact below 10 ms, at most 4 ms off below 100 ms, at most 4.9 % from 100 ms."""
    edges = histograms.EDGES
    for bucket, low in enumerate(edges):
        high = edges[bucket + 1] - 1 if bucket + 1 < len(edges) else 2**31 - 1
        shown = histograms.REPRESENTATIVES[bucket]
        if high < low:  # an empty bucket: two powers within one integer
            continue
        assert low <= shown <= high
        worst = max(shown - low, high - shown)
        if high < 10:
            assert worst == 0, bucket
        elif high < 100:
            assert worst <= 4, bucket
        else:
            assert (shown - low) / low <= 0.049 and (high - shown) / high <= 0.049, bucket


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        (range(1, 101), 0.50, 50),
        (range(1, 101), 0.95, 95),
        (range(1, 101), 0.99, 99),
        ([7], 0.95, 7),
        ([1, 1, 1, 9], 0.50, 1),
        ([1, 1, 1, 9], 0.95, 9),
        ([], 0.5, None),
    ],
)
def test_a_percentile_is_the_nearest_rank_read_as_its_bucket(values, fraction, expected):
    counted = Counter(histograms.bucket_of(value) for value in values)
    shown = histograms.percentile(counted, fraction)
    assert shown == (None if expected is None else histograms.approximate(expected))


def _record(key, when: datetime, latency_ms: int, ttft_ms: int | None = None) -> UsageRecord:
    return UsageRecord(
        id=uuid.uuid4(),
        created_at=when,
        request_id="r",
        user_id=key.user_id,
        api_key=key,
        team_id=key.team_id,
        endpoint="chat_completions",
        model_requested="m",
        status=200,
        outcome=Outcome.OK,
        usage_source="missing",
        latency_ms=latency_ms,
        ttft_ms=ttft_ms,
    )


@pytest.mark.django_db(transaction=True)
def test_the_database_puts_every_value_in_pythons_bucket():
    """Values around every edge, through the trigger and through the records' expression."""
    key = services.api_key_create(user=get_user_model().objects.create_user("alice"), name="k")[0]
    values = sorted({v for edge in histograms.EDGES for v in (edge - 1, edge, edge + 1) if 0 <= v < 2**31})
    UsageRecord.objects.bulk_create(_record(key, NOW, value, ttft_ms=value) for value in values)

    expected = {}
    for value in values:
        bucket = histograms.bucket_of(value)
        expected[bucket] = expected.get(bucket, 0) + 1
    for metric in histograms.METRICS:
        stored = Counter()
        for row in UsageHistogram.objects.filter(span="h", metric=metric).values():
            stored.update(histograms.in_band(row))
        assert stored == expected, metric
        read = dict(
            UsageRecord.objects.annotate(bucket=histograms.Bucket(metric))
            .values("bucket")
            .annotate(n=Count("*"))
            .values_list("bucket", "n")
        )
        assert read == expected, metric
    # The whole hour read back from the histograms; a minute of it from the records.
    assert histograms.counts(since=NOW.replace(minute=0, second=0))["latency_ms"] == expected
    assert histograms.counts(since=NOW - timedelta(seconds=1))["ttft_ms"] == expected


def _exact(values: list[int], fraction: float) -> int | None:
    """The nearest-rank percentile, as `percentile` computed it from the records before."""
    if not values:
        return None
    return sorted(values)[max(1, math.ceil(fraction * len(values))) - 1]


@pytest.mark.django_db(transaction=True)
def test_the_dashboards_percentiles_are_the_exact_ones_bucketed():
    rng = random.Random(12)
    teams = [Team.objects.create(name=f"t{n}") for n in range(2)]
    keys = []
    for number, team in enumerate([*teams, None]):
        user = get_user_model().objects.create_user(f"u{number}")
        if team is not None:
            services.team_member_add(team=team, user=user)
        keys.append(services.api_key_create(user=user, name="k", team=team)[0])
    records = []
    for _ in range(1500):
        stream = rng.random() < 0.6
        # Over 35 days, half of them in the last 26 hours, to the microsecond: every period's
        # ragged ends hold some.
        days = 35 if rng.random() < 0.5 else 26 / 24
        records.append(
            _record(
                rng.choice(keys),
                NOW - timedelta(microseconds=rng.randint(0, int(days * 86400 * 10**6))),
                int(rng.lognormvariate(7, 1.2)),
                int(rng.lognormvariate(5.5, 0.9)) if stream else None,
            )
        )
    UsageRecord.objects.bulk_create(records)

    for period in dashboard.PERIODS.values():
        for team in (None, *teams):
            since = NOW - period.span
            picked = [r for r in records if r.created_at >= since and (team is None or r.team_id == team.pk)]
            figures = dashboard.usage_dashboard(period=period.key, now=NOW, team_id=team and team.pk)
            for metric, shown in (("latency_ms", figures.latency), ("ttft_ms", figures.ttft)):
                values = [getattr(r, metric) for r in picked if getattr(r, metric) is not None]
                assert len(values) > 20
                for name, fraction in (("p50", 0.5), ("p95", 0.95)):
                    exact = _exact(values, fraction)
                    assert shown[name] == histograms.approximate(exact), (period.key, team, metric, name)
                    assert abs(shown[name] - exact) <= max(4, 0.049 * exact)
