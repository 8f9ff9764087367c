"""Users in the admin: their keys and their keys' defaults on their page, and deactivation
(which revokes their keys) instead of a deletion that would take their usage with it."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from accounts import services
from accounts.admin.display import timestamp
from accounts.models import ApiKey, UserPolicy

User = get_user_model()


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    fields = ("prefix", "name", "status", "hf_token", "created", "last_used", "expires", "revoked")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    verbose_name_plural = "API keys (create them under API keys: the key is shown once there)"

    created = timestamp("created_at", "created")
    last_used = timestamp("last_used_at", "last used")
    expires = timestamp("expires_at", "expires")
    revoked = timestamp("revoked_at", "revoked")

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        return super().get_queryset(request).select_related("hf_token")

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class UserPolicyInline(admin.StackedInline):
    model = UserPolicy
    can_delete = False
    verbose_name_plural = "Limits: defaults for this user's keys, and caps on all of them together"
    fieldsets = [
        (
            "Each key's defaults (for keys that set none)",
            {"fields": (*UserPolicy.LIMIT_FIELDS, "allowed_models")},
        ),
        (
            "All keys together",
            {"fields": ("total_rpm", "total_tpm", "total_token_budget", "total_usd_budget")},
        ),
    ]


admin.site.unregister(User)


@admin.register(User)
class HfproxyUserAdmin(UserAdmin):
    inlines = [*UserAdmin.inlines, UserPolicyInline, ApiKeyInline]
    list_display = (*UserAdmin.list_display, "api_keys_link")
    actions = ["deactivate_and_revoke_keys"]
    # A user with keys or usage cannot be deleted (usage is the team's history): these pages
    # say what to do instead and offer it.
    delete_confirmation_template = "admin/accounts/user/delete_confirmation.html"
    delete_selected_confirmation_template = "admin/accounts/user/delete_selected_confirmation.html"

    def save_model(self, request, obj, form, change: bool) -> None:
        services.user_save(user=obj)

    def save_formset(self, request, form, formset, change: bool) -> None:
        if formset.model is not UserPolicy:
            super().save_formset(request, form, formset, change)
            return
        for policy in formset.save(commit=False):  # the inline deletes nothing
            services.user_policy_save(policy=policy, actor=request.user)

    def render_delete_form(self, request, context):
        return super().render_delete_form(request, {**context, "deactivate_users": [context["object"]]})

    @admin.action(description=_("Deactivate and revoke their API keys"), permissions=["change"])
    def deactivate_and_revoke_keys(self, request, queryset) -> None:
        users, revoked = 0, 0
        for user in queryset.exclude(pk=request.user.pk):
            revoked += services.user_deactivate(user=user)
            self.log_change(request, user, "Deactivated and revoked their API keys.")
            users += 1
        self.message_user(
            request,
            _("Deactivated %(users)d user(s) and revoked %(keys)d API key(s); their usage stays counted.")
            % {"users": users, "keys": revoked},
            messages.SUCCESS,
        )
        if queryset.filter(pk=request.user.pk).exists():
            self.message_user(
                request, _("You cannot deactivate yourself: you were left as you are."), messages.WARNING
            )

    @admin.display(description="API keys")
    def api_keys_link(self, user) -> str:
        url = reverse("admin:accounts_apikey_changelist") + f"?user__id__exact={user.pk}"
        return format_html('<a href="{}">keys</a>', url)
