"""The usage list's date drill-down, without the admin's SELECT DISTINCT of every row's
truncated date (seconds at a million rows; on SQLite the truncation is a Python call per row).
Choices are the years, months or days from the first listed record to the last: two index
lookups.

Each function returns the links as admin/date_hierarchy.html takes them ({"show", "back",
"choices"}); `link(filters)` is the list's query string with those date filters.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

from django.contrib.admin.views.main import ChangeList
from django.utils import formats, timezone
from django.utils.functional import cached_property
from django.utils.text import capfirst

Link = Callable[[dict], str]


def _title(day: date, format_name: str) -> str:
    return capfirst(formats.date_format(day, format_name))


class DrilldownChangeList(ChangeList):
    @cached_property
    def date_drilldown(self) -> dict:
        """The date hierarchy's links for the current filters."""
        name = self.date_hierarchy
        fields = {part: f"{name}__{part}" for part in ("year", "month", "day")}
        year, month, day = (self.params.get(fields[part]) for part in ("year", "month", "day"))

        def link(filters: dict) -> str:
            return self.get_query_string(filters, [f"{name}__"])

        if year and month and day:
            return one_day(link, fields, year, month, day)
        first = self.queryset.order_by(name).values_list(name, flat=True).first()
        last = self.queryset.order_by(f"-{name}").values_list(name, flat=True).first()
        if first is None:
            return {"show": False}
        first, last = timezone.localdate(first), timezone.localdate(last)
        if not year and first.year == last.year:  # one year of data: straight to its months
            year = str(first.year)
            if first.month == last.month:  # one month: to its days
                month = str(first.month)
        if year and month:
            return days_of_month(link, fields, year, month, first, last)
        if year:
            return months_of_year(link, fields, year, first, last)
        return years(link, fields, first, last)


# The year, month and day stay the strings of the query (or the ones it would have): the links
# keep them as they came.


def one_day(link: Link, fields: dict, year: str, month: str, day: str) -> dict:
    chosen = date(int(year), int(month), int(day))
    return {
        "show": True,
        "back": {
            "link": link({fields["year"]: year, fields["month"]: month}),
            "title": _title(chosen, "YEAR_MONTH_FORMAT"),
        },
        "choices": [{"title": _title(chosen, "MONTH_DAY_FORMAT")}],
    }


def days_of_month(link: Link, fields: dict, year: str, month: str, first: date, last: date) -> dict:
    start = max(first, date(int(year), int(month), 1))
    days = [start + timedelta(days=n) for n in range((last - start).days + 1)]
    return {
        "show": True,
        "back": {"link": link({fields["year"]: year}), "title": year},
        "choices": [
            {
                "link": link({fields["year"]: year, fields["month"]: month, fields["day"]: each.day}),
                "title": _title(each, "MONTH_DAY_FORMAT"),
            }
            for each in days
            if each.month == int(month)
        ],
    }


def months_of_year(link: Link, fields: dict, year: str, first: date, last: date) -> dict:
    months = [
        date(int(year), number, 1)
        for number in range(1, 13)
        if (first.year, first.month) <= (int(year), number) <= (last.year, last.month)
    ]
    return {
        "show": True,
        "back": {"link": link({}), "title": "All dates"},
        "choices": [
            {
                "link": link({fields["year"]: year, fields["month"]: each.month}),
                "title": _title(each, "YEAR_MONTH_FORMAT"),
            }
            for each in months
        ],
    }


def years(link: Link, fields: dict, first: date, last: date) -> dict:
    return {
        "show": True,
        "back": None,
        "choices": [
            {"link": link({fields["year"]: str(number)}), "title": str(number)}
            for number in range(first.year, last.year + 1)
        ],
    }
