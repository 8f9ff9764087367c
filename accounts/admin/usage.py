"""Usage in the admin, read-only (the gateway and prune_usage write it): the records' list with
its date drill-down and CSV export, and the usage dashboard's page."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from accounts import dashboard, dashboard_page
from accounts.admin.display import ListsFitMedia, ReadOnlyAdmin, shortened, timestamp
from accounts.admin.drilldown import DrilldownChangeList
from accounts.admin.export import usage_csv_response
from accounts.admin.paginator import EstimatedCountPaginator
from accounts.models import Outcome, Team, UsageRecord
from accounts.templatetags.hfproxy_format import duration, short_count, usd_cell

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


class ModelFilter(admin.AllValuesFieldListFilter):
    """The models asked for, as Django's filter of every value lists them, but only those with a
    successful request, and at most MODEL_CHOICES of them: model names come from clients, and
    20,000 refused ones made the list page 9.3 MB. Any other is a search away."""

    MODEL_CHOICES = 50

    def __init__(self, field, request, params, model, model_admin, field_path) -> None:
        super().__init__(field, request, params, model, model_admin, field_path)
        self.lookup_choices = _successful_models(model, field_path, self.MODEL_CHOICES)


def _successful_models(model, column: str, limit: int) -> list[str]:
    """The first `limit` values of `column` with an ok request, in order: one probe of the
    (model_requested, …) index per value, each from the last one found (a skip scan). A
    DISTINCT read the whole index when there were fewer values than `limit` (4.5 s at ten
    million records with eight models)."""
    table, quoted = model._meta.db_table, connection.ops.quote_name(column)
    # SQLite would pick the outcome index and sort every ok row: "+" keeps it off that one.
    outcome = "+outcome" if connection.vendor == "sqlite" else "outcome"
    first = f"SELECT {quoted} FROM {table} WHERE {outcome} = %s {{}} ORDER BY {quoted} LIMIT 1"
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH RECURSIVE found(name) AS (SELECT ({first.format('')}) UNION ALL "
            f"SELECT ({first.format(f'AND {quoted} > found.name')}) FROM found WHERE found.name IS NOT NULL) "
            "SELECT name FROM found WHERE name IS NOT NULL LIMIT %s",
            [Outcome.OK, Outcome.OK, limit],
        )
        return [name for (name,) in cursor.fetchall()]


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
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
    list_filter = (
        "team",
        "user",
        "api_key",
        ("model_requested", ModelFilter),
        "outcome",
        ("created_at", admin.DateFieldListFilter),
    )
    search_fields = ("=request_id", "model_requested", "model_answered")
    date_hierarchy = "created_at"
    actions = ["export_selected_csv"]
    show_full_result_count = False  # a second COUNT(*) over every row on each filtered page
    paginator = EstimatedCountPaginator  # and the first one only while it is quick
    # On the record's page too, these fields show as in the list.
    shown_as = {"created_at": "created", "stream": "streamed"}
    readonly_fields = tuple(shown_as.values())
    Media = ListsFitMedia

    created = timestamp("created_at", "time")

    @admin.display(description="API key", ordering="api_key__prefix")
    def key_prefix(self, row: UsageRecord) -> str:
        return row.api_key.prefix

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
        parts = [f"{row.prompt_tokens} in", f"{row.completion_tokens} out"]
        if row.cached_tokens:
            parts[0] += f" ({row.cached_tokens} cached)"
        if row.reasoning_tokens:
            parts[1] += f" ({row.reasoning_tokens} reasoning)"
        return format_html(
            '<span title="{} ({})">{}</span>',
            ", ".join(parts),
            row.get_usage_source_display(),
            short_count(row.total_tokens),
        )

    @admin.display(description="cost (USD)", ordering="cost_usd")
    def cost(self, row: UsageRecord) -> str:
        return usd_cell(row.cost_usd)

    @admin.display(description="latency", ordering="latency_ms")
    def latency(self, row: UsageRecord) -> str:
        return duration(row.latency_ms)

    @admin.action(description="Export selected as CSV", permissions=["view"])
    def export_selected_csv(self, request, queryset: QuerySet[UsageRecord]) -> StreamingHttpResponse:
        return usage_csv_response(queryset)

    def get_changelist(self, request, **kwargs):
        return DrilldownChangeList

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
        teams = list(Team.objects.values_list("pk", "name"))
        team = request.GET.get("team", "")
        team_id = int(team) if team.isdigit() and int(team) in dict(teams) else None
        context = {
            **self.admin_site.each_context(request),
            "title": _("Usage dashboard"),
            "opts": self.opts,
            "teams": teams,
            "team_id": team_id,
            **dashboard_page.page(dashboard.usage_dashboard(period=period, team_id=team_id)),
        }
        return TemplateResponse(request, "admin/accounts/usage_dashboard.html", context)
