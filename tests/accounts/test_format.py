"""The admin's template filters: numbers, money and durations as people read them."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.template import Context, Template

from accounts.templatetags import hfproxy_format as fmt


@pytest.mark.parametrize(
    ("count", "shown"),
    [
        (0, "0"),
        (999, "999"),
        (1000, "1k"),
        (12_345, "12.3k"),
        (50_000, "50k"),
        (1_200_000, "1.2M"),
        (3 * 10**9, "3G"),
    ],
)
def test_short_count(count, shown):
    assert fmt.short_count(count) == shown


def test_thousands_usd_and_percent():
    assert fmt.thousands(1234567) == "1,234,567"
    assert (fmt.usd(Decimal("1234.5")), fmt.usd(Decimal("0.0125")), fmt.usd(Decimal(0))) == (
        "$1,234.50",
        "$0.0125",
        "$0.0000",
    )
    assert (fmt.percent(0.1234), fmt.percent(None)) == ("12.34%", "–")


def test_durations_and_list_cells():
    assert (fmt.milliseconds(1234), fmt.milliseconds(None)) == ("1,234 ms", "–")
    assert (fmt.duration(850), fmt.duration(1000), fmt.duration(12_345)) == ("850 ms", "1.0 s", "12.3 s")
    assert (fmt.usd_cell(Decimal("0.0125")), fmt.usd_cell(None)) == ("0.0125", "-")


def test_the_filters_load_in_a_template():
    template = Template(
        "{% load hfproxy_format %}{{ n|thousands }} {{ n|short_count }} {{ cost|usd }} {{ ms|duration }}"
    )
    rendered = template.render(Context({"n": 12_345, "cost": Decimal("2"), "ms": 1500}))
    assert rendered == "12,345 12.3k $2.00 1.5 s"
