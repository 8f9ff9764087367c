"""The audit trail, read-only: entries are written by the services and the sign-in signals."""

from __future__ import annotations

from django.contrib import admin

from accounts.admin.display import ListsFitMedia, timestamp
from accounts.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("when", "actor_name", "action", "target", "team", "source")
    list_filter = ("action", "team")
    search_fields = ("actor_name", "target", "source")
    date_hierarchy = "at"
    show_full_result_count = False
    Media = ListsFitMedia

    when = timestamp("at", "time")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
