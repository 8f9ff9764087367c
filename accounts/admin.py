"""The admin: users and their keys, Hugging Face tokens, usage records and the usage dashboard.

No page shows a secret: a key's plaintext appears once, on the page the add form redirects to
(until then it waits in the session, encrypted; never in messages or logs), digests nowhere,
Hugging Face tokens only masked.
"""

from __future__ import annotations

import contextlib
import csv
import json
from datetime import date, datetime, timedelta

from asgiref.sync import sync_to_async
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.functional import cached_property, lazy
from django.utils.html import format_html
from django.utils.text import capfirst, format_lazy
from django.utils.translation import gettext_lazy as _

from accounts import allowlist, crypto, dashboard, keys, prices, selectors, services
from accounts.models import (
    ApiKey,
    HuggingFaceToken,
    ModelPrice,
    Outcome,
    UsageDaily,
    UsageRecord,
    UserPolicy,
)

User = get_user_model()

RECENT = timedelta(days=30)

admin.site.site_header = _("hfproxy administration")
admin.site.site_title = _("hfproxy admin")
admin.site.index_title = _("Keys, tokens and usage")
# The side menu repeats the index and takes a fifth of a laptop's screen from every list.
admin.site.enable_nav_sidebar = False


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


# The dashboard is linked from the admin's index page.
admin.site.index_template = "admin/accounts/index.html"
_site_index = admin.site.index


def _index(request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
    # The index warns of Hugging Face tokens the router refused: every request with one fails.
    rejections = selectors.recent_rejections() if request.user.has_perm("accounts.view_usagerecord") else []
    hours = int(selectors.REJECTIONS_SHOWN_FOR.total_seconds() // 3600)
    return _site_index(
        request, {"token_rejections": rejections, "rejection_hours": hours, **(extra_context or {})}
    )


admin.site.index = _index  # before the site's URLs are built


# --- Users -------------------------------------------------------------------------------------


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
    verbose_name_plural = "Defaults for this user's keys"


admin.site.unregister(User)


@admin.register(User)
class HfproxyUserAdmin(UserAdmin):
    inlines = [*UserAdmin.inlines, UserPolicyInline, ApiKeyInline]

    def save_related(self, request, form, formsets, change) -> None:
        super().save_related(request, form, formsets, change)
        keys.reset()  # new defaults apply at once here, elsewhere within the TTL

    list_display = (*UserAdmin.list_display, "api_keys_link")
    actions = ["deactivate_and_revoke_keys"]
    # A user with keys or usage cannot be deleted (usage is the team's history): these pages
    # say what to do instead and offer it.
    delete_confirmation_template = "admin/accounts/user/delete_confirmation.html"
    delete_selected_confirmation_template = "admin/accounts/user/delete_selected_confirmation.html"

    def render_delete_form(self, request, context):
        return super().render_delete_form(request, {**context, "deactivate_users": [context["object"]]})

    @admin.action(description=_("Deactivate and revoke their API keys"), permissions=["change"])
    def deactivate_and_revoke_keys(self, request, queryset) -> None:
        users, revoked = 0, 0
        for user in queryset.exclude(pk=request.user.pk):
            for key in ApiKey.objects.filter(user=user, revoked_at__isnull=True):
                services.api_key_revoke(api_key=key)
                revoked += 1
            if user.is_active:
                user.is_active = False
                user.save(update_fields=["is_active"])
            self.log_change(request, user, "Deactivated and revoked their API keys.")
            users += 1
        keys.reset()  # their keys stop at once here, elsewhere within the TTL
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


# --- API keys ----------------------------------------------------------------------------------


# The session's entry for keys created but not shown yet: {primary key: the key, encrypted}.
NEW_KEYS_SESSION = "hfproxy_new_api_keys"


def check_token_owner(form: forms.ModelForm, user) -> None:
    # api_key_create enforces this too; checked here so it is a form error, not a 500.
    token = form.cleaned_data.get("hf_token")
    if token is not None and user is not None and token.owner_id not in (None, user.pk):
        form.add_error("hf_token", f"The Hugging Face token {token.name!r} belongs to another user.")


class ApiKeyAddForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ("user", "name", "hf_token", "expires_at", "allowed_models", *ApiKey.LIMIT_FIELDS)

    def clean_expires_at(self):
        expires_at = self.cleaned_data["expires_at"]
        if expires_at is not None and expires_at <= timezone.now():
            raise ValidationError("A new key must expire in the future.")
        return expires_at

    def clean(self):
        cleaned = super().clean()
        check_token_owner(self, cleaned.get("user"))
        return cleaned


class ApiKeyChangeForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ("name", "hf_token", "expires_at", "allowed_models", *ApiKey.LIMIT_FIELDS)

    def clean(self):
        cleaned = super().clean()
        check_token_owner(self, self.instance.user)
        return cleaned


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


def _short(count: int) -> str:
    """12345 → 12.3k, 50000 → 50k, 1200000 → 1.2M."""
    for size, unit in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if count >= size:
            return f"{count / size:.1f}".removesuffix(".0") + unit
    return str(count)


def recent_usage(column, since=None) -> Subquery:
    """One aggregate of a key's usage since `since` (default: the last 30 days), as a correlated
    subquery: the database computes it for the keys on the page only, in the list's one query."""
    recent = (
        UsageRecord.objects.filter(api_key=OuterRef("pk"), created_at__gte=since or timezone.now() - RECENT)
        .order_by()
        .values("api_key")
        .annotate(value=column)
        .values("value")
    )
    return Coalesce(Subquery(recent, output_field=IntegerField()), 0)


def example_model(api_key: ApiKey) -> str:
    """A model the key may use, for the snippets: DEFAULT_MODEL unless the key's (or its user's)
    allow-list excludes it, then the list's first exact id."""
    user_policy = UserPolicy.objects.filter(user_id=api_key.user_id).first()
    allowed = allowlist.parse_models(api_key.allowed_models or (user_policy and user_policy.allowed_models))
    if allowlist.model_allowed(allowed, settings.DEFAULT_MODEL):
        return settings.DEFAULT_MODEL
    return next((entry for entry in allowed if not set("*?[") & set(entry)), settings.DEFAULT_MODEL)


def usage_snippets(base_url: str, api_key: str, model: str) -> list[dict]:
    """What a person pastes to make a first call with a new key: curl, openai-python, and the
    environment variables the OpenAI SDKs read."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}]})
    curl = (
        f"curl {base_url}/chat/completions \\\n"
        f'  -H "Authorization: Bearer {api_key}" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f"  -d '{body}'"
    )
    python = (
        "from openai import OpenAI\n\n"
        f'client = OpenAI(base_url="{base_url}", api_key="{api_key}")\n'
        "answer = client.chat.completions.create(\n"
        f"    model={json.dumps(model)},\n"
        '    messages=[{"role": "user", "content": "Hello!"}],\n'
        ")\n"
        "print(answer.choices[0].message.content)"
    )
    environment = f"export OPENAI_BASE_URL={base_url}\nexport OPENAI_API_KEY={api_key}"
    return [
        {"id": "snippet-curl", "label": "curl", "text": curl},
        {"id": "snippet-python", "label": "openai-python", "text": python},
        {"id": "snippet-env", "label": _("Environment (any OpenAI SDK)"), "text": environment},
    ]


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
    list_filter = (KeyStatusFilter, "user")
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
        return (
            super()
            .get_queryset(request)
            .annotate(
                requests_30d=recent_usage(Count("*")),
                tokens_30d=recent_usage(Sum("total_tokens")),
                tokens_this_month=recent_usage(
                    Sum("total_tokens"),
                    since=timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0),
                ),
            )
        )

    @admin.display(description="budget (this month)")
    def budget_this_month(self, key: ApiKey) -> str:
        budget = key.token_budget
        if budget is None:
            policy = getattr(key.user, "policy", None)
            budget = policy.token_budget if policy is not None else None
        used = _short(key.tokens_this_month)
        return f"{used} / {_short(budget)}" if budget is not None else f"{used} / no budget"

    @admin.display(description="requests (30 d)", ordering="requests_30d")
    def requests_30d(self, key: ApiKey) -> int:
        return key.requests_30d

    @admin.display(description="tokens (30 d)", ordering="tokens_30d")
    def tokens_30d(self, key: ApiKey) -> str:
        return format_html('<span title="{}">{}</span>', f"{key.tokens_30d:,}", _short(key.tokens_30d))

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
            super().save_model(request, obj, form, change)
            keys.reset()  # a new token or expiry applies at once here, elsewhere within the TTL
            return
        created, plaintext = services.api_key_create(
            user=obj.user,
            name=obj.name,
            hf_token=obj.hf_token,
            expires_at=obj.expires_at,
            allowed_models=obj.allowed_models,
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
        pending = request.session.get(NEW_KEYS_SESSION, {})
        ciphertext = pending.pop(str(object_id), None)
        if ciphertext is not None:
            request.session[NEW_KEYS_SESSION] = pending
        plaintext = None
        with contextlib.suppress(crypto.DecryptionError):  # FIELD_ENCRYPTION_KEY changed meanwhile
            plaintext = crypto.decrypt(ciphertext) if ciphertext else None
        base_url = request.build_absolute_uri(settings.API_PREFIX)
        context = {
            **self.admin_site.each_context(request),
            "title": _("API key created"),
            "opts": self.opts,
            "api_key": api_key,
            "plaintext": plaintext,
            "base_url": base_url,
            "snippets": usage_snippets(base_url, plaintext, example_model(api_key)) if plaintext else [],
        }
        return TemplateResponse(request, "admin/accounts/apikey/created.html", context)

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_selected(self, request, queryset: QuerySet[ApiKey]) -> None:
        revoked = 0
        for key in queryset.filter(revoked_at__isnull=True):
            services.api_key_revoke(api_key=key)
            self.log_change(request, key, "Revoked.")
            revoked += 1
        self.message_user(request, f"Revoked {revoked} key{'s' if revoked != 1 else ''}.", messages.SUCCESS)


# --- Hugging Face tokens -----------------------------------------------------------------------


class HuggingFaceTokenForm(forms.ModelForm):
    value = forms.CharField(
        label="Token",
        required=False,
        # Never rendered back, not even after a failed submission.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )

    class Meta:
        model = HuggingFaceToken
        fields = ("name", "owner", "value")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is None:
            self.fields["value"].required = True
            self.fields["value"].help_text = "Stored encrypted; shown only masked from now on."
        else:
            self.fields[
                "value"
            ].help_text = f"Leave empty to keep the current token ({self.instance.masked}). Stored encrypted."

    def clean_value(self) -> str:
        value = self.cleaned_data["value"]
        return services.validate_hf_token(value) if value else ""

    def clean_owner(self):
        owner = self.cleaned_data["owner"]
        if owner is not None and self.instance.pk is not None:
            others = self.instance.api_keys.exclude(user=owner)
            if others.exists():
                raise ValidationError(
                    "Keys of other users use this token: it can only stay shared or theirs."
                )
        return owner


@admin.register(HuggingFaceToken)
class HuggingFaceTokenAdmin(admin.ModelAdmin):
    form = HuggingFaceTokenForm
    list_display = ("name", "owner_or_shared", "masked", "keys_using", "rejected", "created")
    list_select_related = ("owner",)
    search_fields = ("name", "owner__username")
    readonly_fields = ("masked", "created")
    Media = ListsFitMedia

    created = timestamp("created_at", "created")

    def get_fields(self, request, obj=None):
        return ("name", "owner", "value") if obj is None else ("name", "owner", "masked", "value", "created")

    def get_queryset(self, request: HttpRequest) -> QuerySet[HuggingFaceToken]:
        return (
            super()
            .get_queryset(request)
            .annotate(keys_using=Count("api_keys"), rejected_at=selectors.last_rejection())
            .annotate(worked_since=selectors.worked_since("rejected_at"))
        )

    @admin.display(description="rejected by Hugging Face", ordering="rejected_at")
    def rejected(self, token: HuggingFaceToken) -> str:
        """The last 401 the router gave this token since its value was set, unless a request
        with it has succeeded since: replace it."""
        if token.rejected_at is None or token.worked_since:
            return "-"
        return format_html(
            '<strong class="errornote">at {}: replace its value</strong>', when(token.rejected_at)
        )

    @admin.display(description="owner", ordering="owner__username")
    def owner_or_shared(self, token: HuggingFaceToken) -> str:
        return token.owner.get_username() if token.owner_id else "shared"

    @admin.display(description="token")
    def masked(self, token: HuggingFaceToken) -> str:
        return token.masked

    @admin.display(description="keys using it", ordering="keys_using")
    def keys_using(self, token: HuggingFaceToken) -> int:
        return token.keys_using

    def save_model(self, request, obj: HuggingFaceToken, form, change: bool) -> None:
        value = form.cleaned_data.get("value")
        if value:
            obj.set_value(value)
        super().save_model(request, obj, form, change)
        if change:
            keys.reset()  # keys using it pick up the new value at once here


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    """Prices from the router's list (`manage.py refresh_prices`), and custom ones: a price
    added or edited here is the admin's, and refreshing leaves it alone."""

    list_display = ("model", "provider", "input_per_million", "output_per_million", "source", "updated")
    list_filter = ("source", "provider")
    search_fields = ("model", "provider")
    readonly_fields = ("source", "updated")
    Media = ListsFitMedia

    updated = timestamp("updated_at", "updated")

    def save_model(self, request, obj: ModelPrice, form, change: bool) -> None:
        obj.source = ModelPrice.Source.CUSTOM
        super().save_model(request, obj, form, change)
        prices.reset()  # this process prices with it at once; others within PRICES_CACHE_TTL

    def delete_model(self, request, obj: ModelPrice) -> None:
        super().delete_model(request, obj)
        prices.reset()

    def delete_queryset(self, request, queryset) -> None:
        super().delete_queryset(request, queryset)
        prices.reset()


# --- Usage -------------------------------------------------------------------------------------

CSV_COLUMNS = {
    "created_at": "created_at",
    "request_id": "request_id",
    "user": "user__username",
    "api_key": "api_key__prefix",
    "endpoint": "endpoint",
    "model_requested": "model_requested",
    "model_answered": "model_answered",
    "stream": "stream",
    "status": "status",
    "outcome": "outcome",
    "error_code": "error_code",
    "hf_token": "hf_token__name",
    "upstream_attempts": "upstream_attempts",
    "provider": "provider",
    "prompt_tokens": "prompt_tokens",
    "completion_tokens": "completion_tokens",
    "total_tokens": "total_tokens",
    "cost_usd": "cost_usd",
    "price_input": "price_input",
    "price_output": "price_output",
    "usage_source": "usage_source",
    "latency_ms": "latency_ms",
    "ttft_ms": "ttft_ms",
}
CSV_PAGE = 2_000


class _Line:
    """csv.writer's file: hands back each written line."""

    def write(self, line: str) -> str:
        return line


def _cell(value) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    # Model names come from clients: a leading = + - @ must not become a formula in a spreadsheet.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv_page(records: QuerySet[UsageRecord], after: tuple | None) -> list[tuple]:
    # Keyset pagination: each page is one indexed query, however deep into the export.
    page = records.order_by("-created_at", "-id")
    if after is not None:
        page = page.filter(Q(created_at__lt=after[0]) | Q(created_at=after[0], id__lt=after[1]))
    return list(page.values_list("created_at", "id", *CSV_COLUMNS.values())[:CSV_PAGE])


async def _csv_lines(records: QuerySet[UsageRecord]):
    writer = csv.writer(_Line())
    yield writer.writerow(CSV_COLUMNS)
    after = None
    while True:
        rows = await sync_to_async(_csv_page)(records, after)
        for row in rows:
            yield writer.writerow([_cell(value) for value in row[2:]])
        if len(rows) < CSV_PAGE:
            return
        after = rows[-1][:2]


def usage_csv_response(records: QuerySet[UsageRecord]) -> StreamingHttpResponse:
    """The records as CSV, newest first, streamed page by page (an async iterator: under ASGI a
    sync one would be read whole into memory first)."""
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    return StreamingHttpResponse(
        _csv_lines(records.order_by()),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="usage-{stamp}.csv"'},
    )


class UsageChangeList(ChangeList):
    @cached_property
    def date_drilldown(self) -> dict:
        """The date hierarchy's links, as admin/date_hierarchy.html takes them, without the
        admin's SELECT DISTINCT of every row's truncated date (seconds at a million rows; on
        SQLite the truncation is a Python call per row). Choices are the years, months or days
        from the first listed record to the last: two index lookups."""
        name = self.date_hierarchy
        fields = {part: f"{name}__{part}" for part in ("year", "month", "day")}
        year, month, day = (self.params.get(fields[part]) for part in ("year", "month", "day"))

        def link(filters: dict) -> str:
            return self.get_query_string(filters, [f"{name}__"])

        if year and month and day:
            chosen = date(int(year), int(month), int(day))
            return {
                "show": True,
                "back": {
                    "link": link({fields["year"]: year, fields["month"]: month}),
                    "title": capfirst(formats.date_format(chosen, "YEAR_MONTH_FORMAT")),
                },
                "choices": [{"title": capfirst(formats.date_format(chosen, "MONTH_DAY_FORMAT"))}],
            }
        first = self.queryset.order_by(name).values_list(name, flat=True).first()
        last = self.queryset.order_by(f"-{name}").values_list(name, flat=True).first()
        if first is None:
            return {"show": False}
        first, last = timezone.localdate(first), timezone.localdate(last)
        if not year and first.year == last.year:
            year = str(first.year)
            if first.month == last.month:
                month = str(first.month)
        if year and month:
            start = max(first, date(int(year), int(month), 1))
            days = [start + timedelta(days=n) for n in range((last - start).days + 1)]
            return {
                "show": True,
                "back": {"link": link({fields["year"]: year}), "title": year},
                "choices": [
                    {
                        "link": link({fields["year"]: year, fields["month"]: month, fields["day"]: each.day}),
                        "title": capfirst(formats.date_format(each, "MONTH_DAY_FORMAT")),
                    }
                    for each in days
                    if each.month == int(month)
                ],
            }
        if year:
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
                        "title": capfirst(formats.date_format(each, "YEAR_MONTH_FORMAT")),
                    }
                    for each in months
                ],
            }
        return {
            "show": True,
            "back": None,
            "choices": [
                {"link": link({fields["year"]: str(number)}), "title": str(number)}
                for number in range(first.year, last.year + 1)
            ],
        }


class UsageAdminBase(admin.ModelAdmin):
    """Usage is written by the gateway and prune_usage only: read-only here."""

    @admin.display(description="API key", ordering="api_key__prefix")
    def key_prefix(self, row) -> str:
        return row.api_key.prefix

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


# The outcomes in a list's narrow column; the full label is in the filter and on the record's page.
SHORT_OUTCOMES = {
    Outcome.OK: _("ok"),
    Outcome.BAD_REQUEST: _("bad request"),
    Outcome.UPSTREAM_ERROR: _("upstream error"),
    Outcome.CLIENT_DISCONNECTED: _("client left"),
    Outcome.TIMEOUT: _("timeout"),
    Outcome.REFUSED: _("refused"),
    Outcome.PROXY_ERROR: _("proxy error"),
}


@admin.register(UsageRecord)
class UsageRecordAdmin(UsageAdminBase):
    # One line a record, on a laptop's screen; every field is on the record's page.
    list_display = (
        "created",
        "user",
        "key_prefix",
        "requested_model",
        "streamed",
        "result",
        "tokens",
        "cost",
        "latency",
    )
    list_select_related = ("user", "api_key")
    list_filter = ("user", "api_key", "model_requested", "outcome", ("created_at", admin.DateFieldListFilter))
    search_fields = ("=request_id", "model_requested", "model_answered")
    date_hierarchy = "created_at"
    actions = ["export_selected_csv"]
    show_full_result_count = False  # a second COUNT(*) over every row on each filtered page
    # On the record's page too, these fields show as in the list.
    shown_as = {"created_at": "created", "stream": "streamed"}
    readonly_fields = tuple(shown_as.values())
    Media = ListsFitMedia

    created = timestamp("created_at", "time")

    def get_fields(self, request, obj=None):
        fields = [name for name in super().get_fields(request, obj) if name not in self.readonly_fields]
        return [self.shown_as.get(name, name) for name in fields]

    @admin.display(description="model", ordering="model_requested")
    def requested_model(self, row: UsageRecord) -> str:
        answered = row.model_answered if row.model_answered != row.model_requested else ""
        title = " · ".join(
            filter(None, [row.model_requested, answered and f"answered by {answered}", row.provider])
        )
        return shortened(row.model_requested or row.model_answered, "14em", title=title)

    @admin.display(description="stream", ordering="stream")
    def streamed(self, row: UsageRecord) -> str:
        # Text, not the boolean icon: a red cross for "not streamed" reads as a failure.
        return "stream" if row.stream else "-"

    @admin.display(description="result", ordering="status")
    def result(self, row: UsageRecord) -> str:
        return format_html(
            '<span class="outcome-{}" title="{}">{} {}</span>',
            row.outcome,
            row.error_code or row.get_outcome_display(),
            row.status,
            SHORT_OUTCOMES.get(row.outcome, row.outcome),
        )

    @admin.display(description="tokens", ordering="total_tokens")
    def tokens(self, row: UsageRecord) -> str:
        if row.total_tokens is None:
            return "-"
        return format_html(
            '<span title="{} in, {} out ({})">{}</span>',
            row.prompt_tokens,
            row.completion_tokens,
            row.get_usage_source_display(),
            _short(row.total_tokens),
        )

    @admin.display(description="cost (USD)", ordering="cost_usd")
    def cost(self, row: UsageRecord) -> str:
        return "-" if row.cost_usd is None else f"{row.cost_usd:.4f}"

    @admin.display(description="latency", ordering="latency_ms")
    def latency(self, row: UsageRecord) -> str:
        return f"{row.latency_ms / 1000:.1f} s" if row.latency_ms >= 1000 else f"{row.latency_ms} ms"

    @admin.action(description="Export selected as CSV", permissions=["view"])
    def export_selected_csv(self, request, queryset: QuerySet[UsageRecord]) -> StreamingHttpResponse:
        return usage_csv_response(queryset)

    def get_changelist(self, request, **kwargs):
        return UsageChangeList

    def get_urls(self):
        own = [
            path("export/", self.admin_site.admin_view(self.export_view), name="accounts_usagerecord_export"),
            path(
                "dashboard/",
                self.admin_site.admin_view(self.dashboard_view),
                name="accounts_usagerecord_dashboard",
            ),
        ]
        return own + super().get_urls()

    def export_view(self, request: HttpRequest) -> StreamingHttpResponse:
        """The change list's rows as CSV: the same filters, search and date drill-down."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return redirect(reverse("admin:accounts_usagerecord_changelist") + "?e=1")
        return usage_csv_response(changelist.get_queryset(request))

    def dashboard_view(self, request: HttpRequest) -> TemplateResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        period = request.GET.get("period", dashboard.DEFAULT_PERIOD)
        if period not in dashboard.PERIODS:
            period = dashboard.DEFAULT_PERIOD
        context = {
            **self.admin_site.each_context(request),
            "title": _("Usage dashboard"),
            "opts": self.opts,
            **dashboard.page(dashboard.usage_dashboard(period=period)),
        }
        return TemplateResponse(request, "admin/accounts/usage_dashboard.html", context)


@admin.register(UsageDaily)
class UsageDailyAdmin(UsageAdminBase):
    """What `prune_usage` kept of records past the retention period."""

    list_display = (
        "day",
        "user",
        "key_prefix",
        "endpoint",
        "model_requested",
        "outcome",
        "requests",
        "total_tokens",
        "cost_usd",
    )
    list_select_related = ("user", "api_key")
    list_filter = ("user", "model_requested", "outcome")
    date_hierarchy = "day"
