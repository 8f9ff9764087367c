"""The audit trail, read-only: entries are written by the services and the sign-in signals."""

from __future__ import annotations

from django.contrib import admin

from accounts.admin.display import ListsFitMedia, ReadOnlyAdmin, timestamp
from accounts.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ("when", "actor_name", "action", "target", "team", "source")
    list_filter = ("action", "team")
    search_fields = ("actor_name", "target", "source")
    date_hierarchy = "at"
    show_full_result_count = False
    Media = ListsFitMedia

    when = timestamp("at", "time")
