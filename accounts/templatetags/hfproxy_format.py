"""Numbers, durations and money as people read them on the admin's pages: `{% load
hfproxy_format %}` in a template, or the functions themselves in a list column.

A missing figure (no request had one) is a dash: "–" on the dashboard, "-" in a list's cell,
like Django's own empty cells.
"""

from __future__ import annotations

from decimal import Decimal

from django import template

register = template.Library()


@register.filter(is_safe=True)
def thousands(count: int) -> str:
    """12345 → 12,345."""
    return f"{count:,}"


@register.filter(is_safe=True)
def short_count(count: int) -> str:
    """12345 → 12.3k, 50000 → 50k, 1200000 → 1.2M: a count in a narrow column."""
    for size, unit in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if count >= size:
            return f"{count / size:.1f}".removesuffix(".0") + unit
    return str(count)


@register.filter(is_safe=True)
def usd(amount: Decimal) -> str:
    """$1,234.50, and cents' fractions below a dollar: $0.0125."""
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:,.4f}"


@register.filter(is_safe=True)
def usd_cell(amount: Decimal | None) -> str:
    """A request's cost in a list whose column says USD: 0.0125."""
    return "-" if amount is None else f"{amount:.4f}"


@register.filter(is_safe=True)
def percent(fraction: float | None) -> str:
    """0.1234 → 12.34%."""
    return "–" if fraction is None else f"{fraction:.2%}"


@register.filter(is_safe=True)
def milliseconds(value: int | None) -> str:
    """1234 → 1,234 ms: a percentile, comparable across the dashboard's figures."""
    return "–" if value is None else f"{value:,} ms"


@register.filter(is_safe=True)
def duration(value_ms: int) -> str:
    """One request's time: 850 ms, 1.2 s."""
    return f"{value_ms / 1000:.1f} s" if value_ms >= 1000 else f"{value_ms} ms"
