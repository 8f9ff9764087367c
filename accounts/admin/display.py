"""How values show in the admin's lists and read-only fields: times as people read them, long
text cut to fit a laptop's screen, and the style sheet that keeps a row on one line."""

from __future__ import annotations

from datetime import datetime

from django.contrib import admin
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import timezone
from django.utils.functional import lazy
from django.utils.html import format_html
from django.utils.text import format_lazy


def when(value: datetime | None, *, zone: bool = True) -> str:
    """A time as people read it: 2026-12-01 14:05 UTC (the zone left to the column's label with
    zone=False); "3 hours ago" when hovered."""
    if value is None:
        return "-"
    local = timezone.localtime(value)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        value.isoformat(),
        naturaltime(value),
        local.strftime("%Y-%m-%d %H:%M") + (f" {local.tzname()}" if zone else ""),
    )


current_zone = lazy(lambda: timezone.localtime().tzname(), str)


def timestamp(field_name: str, description: str):
    """A list column or read-only field showing `field_name` with `when`, sorted by it; the
    time zone is in its label, once for the column."""

    @admin.display(description=format_lazy("{} ({})", description, current_zone()), ordering=field_name)
    def column(self, obj) -> str:
        return when(getattr(obj, field_name), zone=False)

    return column


def shortened(text: str, width: str = "16em", title: str = "") -> str:
    """Long text (a model id, a key's name) on one line, cut with an ellipsis, whole when hovered."""
    if not text:
        return "-"
    return format_html(
        '<span class="shortened" style="max-width: {}" title="{}">{}</span>', width, title or text, text
    )


class ListsFitMedia:
    css = {"all": ["accounts/admin.css"]}


class ReadOnlyAdmin(admin.ModelAdmin):
    """Pages of records written only by the proxy (usage, the audit trail): read, never edited."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
