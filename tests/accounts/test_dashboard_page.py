"""The dashboard page's layout of the figures: top rows and bar chart geometry (no queries)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from accounts import dashboard, dashboard_page

START = datetime(2026, 3, 10, tzinfo=UTC)


def series(values: list[int]) -> list[dict]:
    return [{"start": START + timedelta(hours=n), "requests": value} for n, value in enumerate(values)]


def test_bars_scale_to_the_biggest_and_a_small_one_stays_visible():
    chart = dashboard_page.bar_chart(series([0, 1, 1000]), "requests", "hour")
    heights = [bar["height"] for bar in chart["bars"]]
    plot_height = dashboard_page.CHART_HEIGHT - dashboard_page.CHART_BOTTOM - 8
    assert heights == [0.0, 1.0, plot_height]
    assert all(bar["y"] + bar["height"] == chart["baseline"] for bar in chart["bars"])
    assert (chart["top"], chart["total"]) == (1000, 1001)
    assert [tick["label"] for tick in chart["ticks"]] == ["Mar 10 00:00", "Mar 10 01:00", "Mar 10 02:00"]
    xs = [bar["x"] for bar in chart["bars"]]
    assert xs == sorted(xs) and xs[0] > dashboard_page.CHART_LEFT
    assert xs[-1] + chart["bars"][-1]["width"] <= dashboard_page.CHART_WIDTH


def test_days_are_labelled_without_the_hour_and_an_empty_series_draws_nothing():
    assert dashboard_page.bar_chart(series([3]), "requests", "day")["bars"][0]["label"] == "Mar 10"
    empty = dashboard_page.bar_chart([], "requests", "hour")
    assert (empty["bars"], empty["ticks"], empty["top"], empty["total"]) == ([], [], 0, 0)


def test_top_rows_are_named_and_carry_their_error_rate():
    rows = [
        {
            "user": "alice",
            "requests": 10,
            "tokens": 5,
            "cost": Decimal(1),
            "errors": 2,
            "refused": 4,
            "bad_requests": 2,
        },
        {
            "user": "",
            "requests": 1,
            "tokens": 0,
            "cost": Decimal(0),
            "errors": 0,
            "refused": 1,
            "bad_requests": 0,
        },
    ]
    alice, nameless = dashboard_page.top_rows(rows, "user")
    assert (alice["name"], alice["error_rate"], alice["refused"]) == ("alice", 0.5, 4)
    assert (nameless["name"], nameless["error_rate"]) == ("(none)", None)


def test_the_page_charts_requests_tokens_and_errors():
    figures = dashboard.Dashboard(
        period=dashboard.PERIODS["24h"],
        since=START,
        until=START + timedelta(hours=1),
        series=[{"start": START, "requests": 1, "tokens": 2, "errors": 0}],
        top_users=[],
        top_models=[],
    )
    context = dashboard_page.page(figures)
    assert [chart["key"] for chart in context["charts"]] == ["requests", "tokens", "errors"]
    assert [rows for _, rows, _ in context["tops"]] == [[], []]
    assert context["dashboard"] is figures
