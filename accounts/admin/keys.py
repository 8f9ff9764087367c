"""API keys in the admin: the list with each key's recent use, the add form whose key is shown
once on the page it redirects to, and revocation (keys are never deleted: usage points at them).

No page shows a secret: a key's plaintext appears once, on that page (until then it waits in
the session, encrypted; never in messages or logs), its digest nowhere.
"""

from __future__ import annotations

import contextlib

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from accounts import crypto, permissions, selectors, services
from accounts.admin.display import ListsFitMedia, shortened, timestamp
from accounts.admin.snippets import example_model, usage_snippets
from accounts.models import ApiKey
from accounts.templatetags.hfproxy_format import short_count, thousands

# The session's entry for keys created but not shown yet: {primary key: the key, encrypted}.
NEW_KEYS_SESSION = "hfproxy_new_api_keys"


class ApiKeyAddForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ("user", "name", "team", "hf_token", "expires_at", "allowed_models", *ApiKey.LIMIT_FIELDS)

    def clean_expires_at(self):
        expires_at = self.cleaned_data["expires_at"]
        if expires_at is not None and expires_at <= timezone.now():
            raise ValidationError("A new key must expire in the future.")
        return expires_at


class ApiKeyChangeForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ("name", "team", "hf_token", "expires_at", "allowed_models", *ApiKey.LIMIT_FIELDS)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The key's user is fixed: the tokens it may call with are theirs and the shared ones.
        # (Absent on a read-only page: a key of a superuser shown to other staff.)
        if field := self.fields.get("hf_token"):
            field.queryset = field.queryset.usable_by([self.instance.user_id])
        if field := self.fields.get("team"):
            field.queryset = field.queryset.filter(members__user_id=self.instance.user_id)


class KeyStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("active", "active"), ("revoked", "revoked"), ("expired", "expired")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "active":
            return queryset.active(now)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        return queryset


# What only staff who may read usage see of it on the key list.
USAGE_COLUMNS = ("requests_30d", "tokens_30d", "budget_this_month")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    # What a team admin scans for; the token, limits and creation time are on the key's page.
    list_display = (
        "prefix",
        "user",
        "key_name",
        "status",
        "last_used",
        "requests_30d",
        "tokens_30d",
        "budget_this_month",
        "expires",
    )
    list_display_links = ("prefix", "key_name")
    list_select_related = ("user", "user__policy", "hf_token")
    list_filter = (KeyStatusFilter, "team", "user")
    search_fields = ("prefix", "name", "user__username")
    actions = ["revoke_selected"]
    Media = ListsFitMedia

    created = timestamp("created_at", "created")
    last_used = timestamp("last_used_at", "last used")
    expires = timestamp("expires_at", "expires")
    revoked = timestamp("revoked_at", "revoked")

    @admin.display(description="name", ordering="name")
    def key_name(self, key: ApiKey) -> str:
        return shortened(key.name, "12em")

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        return selectors.with_recent_usage(super().get_queryset(request))

    def get_list_display(self, request: HttpRequest):
        if permissions.may_view_usage(request.user):
            return self.list_display
        return tuple(column for column in self.list_display if column not in USAGE_COLUMNS)

    @admin.display(description="budget (this month)")
    def budget_this_month(self, key: ApiKey) -> str:
        budget = key.token_budget
        if budget is None:
            policy = getattr(key.user, "policy", None)
            budget = policy.token_budget if policy is not None else None
        used = short_count(key.tokens_this_month)
        return f"{used} / {short_count(budget)}" if budget is not None else f"{used} / no budget"

    @admin.display(description="requests (30 d)", ordering="requests_30d")
    def requests_30d(self, key: ApiKey) -> int:
        return key.requests_30d

    @admin.display(description="tokens (30 d)", ordering="tokens_30d")
    def tokens_30d(self, key: ApiKey) -> str:
        return format_html(
            '<span title="{}">{}</span>', thousands(key.tokens_30d), short_count(key.tokens_30d)
        )

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        # Only the users and tokens this staff user may give a new key; the choice is checked
        # against these on submission too, so a posted id of any other is refused.
        if db_field.name == "user":
            kwargs["queryset"] = permissions.key_users(request.user, creating=True)
        elif db_field.name == "hf_token":
            kwargs["queryset"] = permissions.key_tokens(request.user, creating=True)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_change_permission(self, request, obj=None) -> bool:
        if not super().has_change_permission(request, obj):
            return False
        return (
            obj is None or permissions.key_users(request.user, creating=False).filter(pk=obj.user_id).exists()
        )

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = ApiKeyChangeForm if obj is not None else ApiKeyAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ApiKeyAddForm.Meta.fields
        return (
            "prefix",
            "user",
            "status",
            *ApiKeyChangeForm.Meta.fields,
            "created",
            "last_used",
            "revoked",
        )

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("prefix", "user", "status", "created", "last_used", "revoked")

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoke instead: usage rows keep pointing at the key

    def save_model(self, request, obj: ApiKey, form, change: bool) -> None:
        if change:
            services.api_key_update(api_key=obj, actor=request.user)
            return
        created, plaintext = services.api_key_create(
            user=obj.user,
            actor=request.user,
            name=obj.name,
            hf_token=obj.hf_token,
            expires_at=obj.expires_at,
            allowed_models=obj.allowed_models,
            team=obj.team,
            **{name: getattr(obj, name) for name in ApiKey.LIMIT_FIELDS},
        )
        # The admin carries on with `obj` (the log entry, the response): make it the new row.
        for model_field in ApiKey._meta.concrete_fields:
            setattr(obj, model_field.attname, getattr(created, model_field.attname))
        obj._state.adding, obj._state.db = False, created._state.db
        request._new_api_key = plaintext  # for response_add, below

    def get_urls(self):
        created = path(
            "<int:object_id>/created/",
            self.admin_site.admin_view(self.created_view),
            name="accounts_apikey_created",
        )
        return [created, *super().get_urls()]

    def response_add(self, request, obj: ApiKey, post_url_continue=None) -> HttpResponse:
        plaintext = getattr(request, "_new_api_key", None)
        if plaintext is None:
            return super().response_add(request, obj, post_url_continue)
        # POST/redirect/GET: reloading the page that shows the key must not post the form again.
        # The key waits for that page in the session, encrypted: one read, then it is gone.
        pending = request.session.get(NEW_KEYS_SESSION, {})
        pending[str(obj.pk)] = crypto.encrypt(plaintext)
        request.session[NEW_KEYS_SESSION] = pending
        return redirect("admin:accounts_apikey_created", obj.pk)

    def created_view(self, request: HttpRequest, object_id: int) -> TemplateResponse:
        """The new key, shown once; on a reload (or any later visit) only that it was shown."""
        api_key = self.get_object(request, str(object_id))
        if api_key is None:
            raise Http404
        if not self.has_add_permission(request):
            raise PermissionDenied
        plaintext = _take_new_key(request, object_id)
        base_url = request.build_absolute_uri(settings.API_PREFIX)
        model = example_model(selectors.api_key_allowed_models(api_key)) if plaintext else ""
        context = {
            **self.admin_site.each_context(request),
            "title": _("API key created"),
            "opts": self.opts,
            "api_key": api_key,
            "plaintext": plaintext,
            "base_url": base_url,
            "snippets": usage_snippets(base_url, plaintext, model) if plaintext else [],
        }
        return TemplateResponse(request, "admin/accounts/apikey/created.html", context)

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_selected(self, request, queryset: QuerySet[ApiKey]) -> None:
        revoked = 0
        keys_of = permissions.key_users(request.user, creating=False)
        for key in queryset.filter(revoked_at__isnull=True, user__in=keys_of):
            services.api_key_revoke(api_key=key, actor=request.user)
            self.log_change(request, key, "Revoked.")
            revoked += 1
        self.message_user(request, f"Revoked {revoked} key{'s' if revoked != 1 else ''}.", messages.SUCCESS)


def _take_new_key(request: HttpRequest, object_id: int) -> str | None:
    """The plaintext of a key this session created and has not shown yet; gone once read."""
    pending = request.session.get(NEW_KEYS_SESSION, {})
    ciphertext = pending.pop(str(object_id), None)
    if ciphertext is None:
        return None
    request.session[NEW_KEYS_SESSION] = pending
    with contextlib.suppress(crypto.DecryptionError):  # FIELD_ENCRYPTION_KEY changed meanwhile
        return crypto.decrypt(ciphertext)
    return None
