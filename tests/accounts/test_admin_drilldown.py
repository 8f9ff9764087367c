"""The usage list's date drill-down, as links from the first record's date to the last's."""

from __future__ import annotations

from datetime import date

from accounts.admin import drilldown

FIELDS = {part: f"created_at__{part}" for part in ("year", "month", "day")}


def link(filters: dict) -> str:
    return "?" + "&".join(f"{name}={value}" for name, value in filters.items())


def test_years_from_the_first_to_the_last():
    shown = drilldown.years(link, FIELDS, date(2024, 5, 1), date(2026, 1, 2))
    assert shown["back"] is None
    assert [choice["title"] for choice in shown["choices"]] == ["2024", "2025", "2026"]
    assert shown["choices"][0]["link"] == "?created_at__year=2024"


def test_the_months_of_a_year_that_have_records():
    shown = drilldown.months_of_year(link, FIELDS, "2025", date(2025, 10, 3), date(2026, 2, 1))
    assert shown["back"] == {"link": "?", "title": "All dates"}
    assert [choice["title"] for choice in shown["choices"]] == [
        "October 2025",
        "November 2025",
        "December 2025",
    ]
    assert shown["choices"][-1]["link"] == "?created_at__year=2025&created_at__month=12"


def test_the_days_of_a_month_from_the_first_record_on():
    shown = drilldown.days_of_month(link, FIELDS, "2026", "3", date(2026, 3, 29), date(2026, 4, 2))
    assert shown["back"] == {"link": "?created_at__year=2026", "title": "2026"}
    assert [choice["title"] for choice in shown["choices"]] == ["March 29", "March 30", "March 31"]
    assert shown["choices"][0]["link"] == "?created_at__year=2026&created_at__month=3&created_at__day=29"


def test_one_day_links_back_to_its_month():
    shown = drilldown.one_day(link, FIELDS, "2026", "3", "4")
    assert shown["back"] == {"link": "?created_at__year=2026&created_at__month=3", "title": "March 2026"}
    assert shown["choices"] == [{"title": "March 4"}]
