"""The usage dashboard: its figures on a known data set, its buckets, its charts, and a query
count that does not grow with the rows."""

from __future__ import annotations

import itertools
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import dashboard, services
from accounts.histograms import approximate
from accounts.models import Outcome, UsageRecord, UsageSource

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)


def usage(api_key, when: datetime, latency_ms: int, **fields) -> UsageRecord:
    ok = fields.get("outcome", Outcome.OK) == Outcome.OK
    return UsageRecord(
        **{
            "id": uuid.uuid4(),
            "created_at": when,
            "request_id": uuid.uuid4().hex,
            "user_id": api_key.user_id,
            "api_key": api_key,
            "endpoint": "chat_completions",
            "model_requested": "model/a",
            "status": 200 if ok else 502,
            "outcome": Outcome.OK,
            "total_tokens": 10 if ok else None,
            "usage_source": UsageSource.PROVIDER if ok else UsageSource.MISSING,
            "latency_ms": latency_ms,
            **fields,
        }
    )


@pytest.fixture
def keys():
    make = get_user_model().objects.create_user
    return (
        services.api_key_create(user=make("alice"))[0],
        services.api_key_create(user=make("bob"))[0],
    )


@pytest.fixture
def known(keys):
    """10 requests in the last 24 h (2 errors, 100 tokens), and one from the day before."""
    alice, bob = keys
    rows = [
        usage(alice, NOW - timedelta(minutes=10 * n), latency, ttft_ms=ttft)
        for n, (latency, ttft) in enumerate(
            [(100, 50), (200, 70), (300, 90), (400, None), (500, None), (600, None)]
        )
    ]
    rows += [
        usage(
            bob,
            NOW - timedelta(hours=3),
            700,
            model_requested="model/b",
            total_tokens=20,
            cost_usd=Decimal("0.25"),
        ),
        usage(
            bob,
            NOW - timedelta(hours=3),
            800,
            model_requested="model/b",
            total_tokens=20,
            cost_usd=Decimal("0.5"),
        ),
        usage(bob, NOW - timedelta(hours=5), 900, model_requested="model/b", outcome=Outcome.UPSTREAM_ERROR),
        usage(bob, NOW - timedelta(hours=5), 1000, model_requested="model/b", outcome=Outcome.TIMEOUT),
        usage(bob, NOW - timedelta(hours=25), 5000, model_requested="model/c"),
    ]
    UsageRecord.objects.bulk_create(rows)


def test_it_computes_the_figures_of_a_known_data_set(known):
    figures = dashboard.usage_dashboard(period="24h", now=NOW)
    assert (figures.requests, figures.tokens, figures.errors) == (10, 100, 2)
    assert figures.cost == Decimal("0.75")
    assert figures.error_rate == pytest.approx(0.2)
    # Nearest rank: the 5th and the 10th of ten latencies, the 2nd and 3rd of three, each read
    # as its histogram bucket.
    assert figures.latency == {"p50": approximate(500), "p95": approximate(1000)}
    assert figures.ttft == {"p50": approximate(70), "p95": approximate(90)}
    assert [(row["user"], row["requests"], row["tokens"], row["errors"]) for row in figures.top_users] == [
        ("alice", 6, 60, 0),
        ("bob", 4, 40, 2),
    ]
    assert [(row["model_requested"], row["requests"]) for row in figures.top_models] == [
        ("model/a", 6),
        ("model/b", 4),
    ]


@pytest.fixture
def mixed(keys):
    """Alice: 4 requests sent upstream (1 failed), 3 refused by policy, 1 bad request."""
    alice, bob = keys
    outcomes = [Outcome.OK] * 3 + [Outcome.UPSTREAM_ERROR] + [Outcome.REFUSED] * 3 + [Outcome.BAD_REQUEST]
    rows = [
        usage(alice, NOW - timedelta(minutes=n), 100, outcome=outcome) for n, outcome in enumerate(outcomes)
    ]
    rows.append(usage(bob, NOW, 100, outcome=Outcome.REFUSED, error_code="rate_limit_exceeded"))
    UsageRecord.objects.bulk_create(rows)


def test_refusals_and_bad_requests_are_neither_errors_nor_in_the_error_rate(mixed):
    figures = dashboard.usage_dashboard(period="24h", now=NOW)
    assert (figures.requests, figures.errors, figures.refused_total, figures.bad_requests) == (9, 1, 4, 1)
    assert figures.error_rate == pytest.approx(1 / 4)
    assert [(row["user"], row["errors"], row["refused"]) for row in figures.top_users] == [
        ("alice", 1, 3),
        ("bob", 0, 1),
    ]
    assert sum(point["errors"] for point in figures.series) == 1


def test_a_key_refused_every_time_has_no_error_rate(keys):
    UsageRecord.objects.bulk_create([usage(keys[0], NOW, 100, outcome=Outcome.REFUSED)])
    figures = dashboard.usage_dashboard(period="24h", now=NOW)
    assert (figures.errors, figures.refused_total, figures.error_rate) == (0, 1, None)


def test_the_page_shows_refusals_apart_from_errors(admin_client, keys):
    now = timezone.now()
    UsageRecord.objects.bulk_create(
        [
            usage(keys[0], now, 100),
            usage(keys[0], now, 100, outcome=Outcome.TIMEOUT),
            usage(keys[0], now, 100, outcome=Outcome.REFUSED, error_code="rate_limit_exceeded"),
            usage(keys[0], now, 100, outcome=Outcome.REFUSED, error_code="rate_limit_exceeded"),
            usage(keys[1], now, 100, outcome=Outcome.BAD_REQUEST),
        ]
    )
    html = admin_client.get("/admin/accounts/usagerecord/dashboard/?period=24h").content.decode()

    def figure(name: str) -> str:
        return re.search(rf'data-figure="{name}"><div class="value">([^<]*)<', html).group(1)

    assert (figure("requests"), figure("errors"), figure("error-rate")) == ("5", "1", "50.00%")
    assert (figure("refused"), figure("bad-requests")) == ("2", "1")
    top_alice = re.search(r"<tr><td>alice</td>(.*?)</tr>", html).group(1)
    assert re.findall(r'<td class="number">([^<]*)</td>', top_alice)[-3:] == ["1", "50.00%", "2"]
    assert "<td>rate_limit_exceeded</td>" in html


def test_the_series_adds_up_to_the_totals_and_puts_rows_in_their_hour(known):
    series = dashboard.usage_dashboard(period="24h", now=NOW).series
    assert len(series) == 25  # a partial hour at each end
    assert series[0]["start"] == NOW - timedelta(hours=24)
    assert [point["start"] for point in series[1:3]] == [
        datetime(2026, 3, 9, 13, tzinfo=UTC),
        datetime(2026, 3, 9, 14, tzinfo=UTC),
    ]
    assert sum(point["requests"] for point in series) == 10
    by_start = {point["start"]: point for point in series}
    assert by_start[datetime(2026, 3, 10, 7, tzinfo=UTC)]["errors"] == 2  # 07:30
    assert by_start[datetime(2026, 3, 10, 9, tzinfo=UTC)]["tokens"] == 40  # 09:30
    # 12:00 to 12:30, the latter included: the last bucket has no end.
    assert (series[-1]["requests"], series[-1]["with_ttft"]) == (4, 3)
    assert (series[-2]["requests"], series[-2]["with_ttft"]) == (2, 0)  # 11:40, 11:50


def test_longer_periods_take_older_rows_in_coarser_buckets(known):
    week = dashboard.usage_dashboard(period="7d", now=NOW)
    month = dashboard.usage_dashboard(period="30d", now=NOW)
    assert (week.requests, month.requests) == (11, 11)
    assert week.latency["p95"] == month.latency["p95"] == approximate(5000)
    assert {b["start"] - a["start"] for a, b in itertools.pairwise(week.series[1:])} == {timedelta(hours=6)}
    assert {b["start"] - a["start"] for a, b in itertools.pairwise(month.series[1:])} == {timedelta(days=1)}
    assert month.series[1]["start"] == datetime(2026, 2, 9, tzinfo=UTC)


def test_an_empty_period_has_no_percentiles(db):
    figures = dashboard.usage_dashboard(period="24h", now=NOW)
    assert (figures.requests, figures.error_rate, figures.latency["p50"], figures.ttft["p95"]) == (
        0,
        None,
        None,
        None,
    )
    assert all(point["requests"] == 0 for point in figures.series)


def test_the_query_count_stays_flat_as_rows_grow(admin_client, keys):
    now = timezone.now()

    def add(count: int) -> None:
        UsageRecord.objects.bulk_create(
            usage(
                keys[n % 2],
                now - timedelta(minutes=n * 7 % (30 * 24 * 60)),
                100 + n,
                model_requested=f"model/{n % 13}",
                ttft_ms=n if n % 3 else None,
                outcome=Outcome.OK if n % 10 else Outcome.TIMEOUT,
            )
            for n in range(count)
        )

    def queries(period: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            response = admin_client.get(f"/admin/accounts/usagerecord/dashboard/?period={period}")
        assert response.status_code == 200
        return len(captured)

    add(10)
    few = {period: queries(period) for period in dashboard.PERIODS}
    add(490)
    assert {period: queries(period) for period in dashboard.PERIODS} == few
    with CaptureQueriesContext(connection) as captured:
        dashboard.usage_dashboard(period="30d")
    # Series, top users, top models and the percentiles (each read in three parts: the records
    # of the period's ragged first hour, the rollups or histograms of its first day's hours,
    # those of the days after), the top users' names, refusals by reason.
    assert len(captured) == 4 * 3 + 1 + 1
    # Sums and counts only: no query reads the records themselves.
    assert not [query["sql"] for query in captured.captured_queries if '"request_id"' in query["sql"]]


def test_the_page_draws_charts_with_data(admin_client, keys):
    now = timezone.now()
    UsageRecord.objects.bulk_create(
        [
            usage(keys[0], now - timedelta(hours=2), 300, ttft_ms=80),
            usage(keys[1], now - timedelta(hours=2), 900, outcome=Outcome.TIMEOUT),
            usage(keys[1], now - timedelta(minutes=5), 600),
        ]
    )
    response = admin_client.get("/admin/accounts/usagerecord/dashboard/?period=24h")
    html = response.content.decode()
    for chart, total in (("requests", 3), ("tokens", 20), ("errors", 1)):
        svg = re.search(rf'<svg class="usage-chart" data-chart="{chart}".*?</svg>', html, re.S).group(0)
        values = [int(value) for value in re.findall(r'<rect class="bar"[^>]*data-value="(\d+)"', svg)]
        assert len(values) == 25 and sum(values) == total, chart
        assert f'data-total="{total}"' in svg
        assert re.search(r'height="(?!0")[\d.]+" data-value="[1-9]', svg), chart  # a visible bar
        assert "<title>" in svg
    shown = (f"{approximate(value)} ms" for value in (600, 900, 80))
    for figure in ("3", "20", "33.33%", *shown):
        assert f'<div class="value">{figure}</div>' in html
    assert "<td>bob</td>" in html and "<td>model/a</td>" in html
    assert 'data-period="24h" class="selected"' in html


def test_the_period_defaults_to_24_hours(admin_client):
    for query in ("", "?period=1y"):
        response = admin_client.get(f"/admin/accounts/usagerecord/dashboard/{query}")
        assert response.status_code == 200
        assert response.context["dashboard"].period.key == "24h"
    week = admin_client.get("/admin/accounts/usagerecord/dashboard/?period=7d")
    assert "Requests per 6 hours" in week.content.decode()
