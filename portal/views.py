"""The members' portal, at /portal/: my keys, my usage, and my teams (for their admins).

Every view is for the signed-in user and checks on the server who may see what: a member sees
their own keys and records only; a team admin sees their team's members, keys and usage; what
changes goes through `accounts.services` (the audit trail, the caches), as in the admin.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from accounts import crypto, dashboard, permissions, rollups, selectors, services
from accounts.admin.export import usage_csv_response
from accounts.admin.snippets import example_model, usage_snippets
from accounts.dashboard_page import bar_chart
from accounts.models import ApiKey, Team, TeamMember

# The session's keys created and not shown yet: {primary key: the key, encrypted}.
NEW_KEYS_SESSION = "hfproxy_portal_new_keys"
RECENT = 20  # the last requests shown


class KeyForm(forms.Form):
    name = forms.CharField(label=gettext_lazy("Name"), max_length=100, required=False)
    team = forms.ModelChoiceField(label=gettext_lazy("Team"), queryset=Team.objects.none(), required=False)
    expires_in_days = forms.IntegerField(
        label=gettext_lazy("Expires in (days)"), min_value=1, max_value=3650, required=False
    )
    rpm = forms.IntegerField(label=gettext_lazy("Requests per minute"), min_value=0, required=False)
    token_budget = forms.IntegerField(label=gettext_lazy("Monthly tokens"), min_value=0, required=False)

    # A key's own caps, and the team's cap per member that bounds each.
    CAPS = (("rpm", "member_rpm"), ("token_budget", "member_token_budget"))

    def __init__(self, user, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = Team.objects.filter(members__user=user)

    def clean(self):
        data = super().clean()
        team = data.get("team")
        for field, member_cap in self.CAPS:
            cap = getattr(team, member_cap) if team is not None else None
            if data.get(field) is not None and cap is not None and data[field] > cap:
                self.add_error(field, _("At most %(cap)s: the team's cap per member.") % {"cap": cap})
        return data


class CapsForm(forms.Form):
    """What a team admin may cap a member's key at (within the team's own caps per member)."""

    rpm = forms.IntegerField(label=gettext_lazy("Requests per minute"), min_value=0, required=False)
    token_budget = forms.IntegerField(label=gettext_lazy("Monthly tokens"), min_value=0, required=False)


@login_required
def keys(request: HttpRequest) -> HttpResponse:
    user = request.user
    form = KeyForm(user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        days = form.cleaned_data["expires_in_days"]
        try:
            api_key, plaintext = services.api_key_create(
                user=user,
                actor=user,
                name=form.cleaned_data["name"],
                team=form.cleaned_data["team"],
                expires_at=timezone.now() + timedelta(days=days) if days else None,
                **{field: form.cleaned_data[field] for field, _ in KeyForm.CAPS},
            )
        except ValidationError as error:
            form.add_error(None, error)
        else:
            # POST/redirect/GET: a reload of the page that shows the key never makes another.
            pending = request.session.get(NEW_KEYS_SESSION, {})
            pending[str(api_key.pk)] = crypto.encrypt(plaintext)
            request.session[NEW_KEYS_SESSION] = pending
            return redirect("portal:key_created", api_key.pk)
    own = ApiKey.objects.filter(user=user).select_related("team").order_by("-created_at")
    return _page(request, "portal/keys.html", {"form": form, "keys": _with_month(own), "tab": "keys"})


def _with_month(api_keys) -> list[ApiKey]:
    """The keys, each with this month's tokens and cost (`month_tokens`, `month_cost`)."""
    api_keys = list(api_keys)
    sums = rollups.totals(since=_month_start(), api_key_ids=[key.pk for key in api_keys], by=("api_key_id",))
    for key in api_keys:
        total = sums.get((key.pk,)) or rollups.nothing()
        key.month_tokens, key.month_cost = total["total_tokens"], total["cost_usd"]
    return api_keys


@login_required
def key_created(request: HttpRequest, pk: int) -> HttpResponse:
    api_key = get_object_or_404(ApiKey, pk=pk, user=request.user)
    pending = request.session.get(NEW_KEYS_SESSION, {})
    sealed = pending.pop(str(pk), None)
    request.session[NEW_KEYS_SESSION] = pending
    plaintext = crypto.decrypt(sealed) if sealed else ""
    base_url = request.build_absolute_uri(settings.API_PREFIX)
    model = example_model(selectors.api_key_allowed_models(api_key))
    context = {
        "api_key": api_key,
        "plaintext": plaintext,
        "base_url": base_url,
        "snippets": usage_snippets(base_url, plaintext, model) if plaintext else [],
        "tab": "keys",
    }
    return _page(request, "portal/key_created.html", context)


@login_required
@require_POST
def key_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    api_key = get_object_or_404(ApiKey.objects.select_related("user"), pk=pk)
    if not permissions.may_manage_key(request.user, api_key):
        raise Http404  # says nothing of keys one may not see
    services.api_key_revoke(api_key=api_key, actor=request.user)
    messages.success(request, _("Key %(prefix)s… revoked.") % {"prefix": api_key.prefix})
    if api_key.user_id != request.user.pk and api_key.team_id:
        return redirect("portal:team", api_key.team_id)
    return redirect("portal:keys")


@login_required
def usage(request: HttpRequest) -> HttpResponse:
    records = selectors.usage_in(since=_days_ago(30), user_id=request.user.pk)
    if request.GET.get("format") == "csv":
        return usage_csv_response(records)
    return _page(request, "portal/usage.html", _usage_context(records, user_id=request.user.pk, tab="usage"))


def _days_ago(days: int) -> datetime:
    return timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=days - 1
    )


def _usage_context(records, *, tab: str, user_id: int | None = None, team_id: int | None = None) -> dict:
    """Charts by day, sums by model (from the rollups), the last requests (`records`): of a
    user's or a team's usage."""
    until, since = timezone.now(), _days_ago(30)
    series = dashboard.usage_series(
        since=since, until=until, step=timedelta(days=1), team_id=team_id, user_id=user_id
    )
    found = rollups.totals(since=since, by=("model_requested",), team_id=team_id, user_id=user_id)
    by_model = sorted(
        (
            {"model_requested": model, **{name: total[name] for name in selectors.USAGE_TOTALS}}
            for (model,), total in found.items()
        ),
        key=lambda row: (-row["requests"], row["model_requested"]),
    )
    return {
        "charts": [bar_chart(series, key, "day") for key in ("requests", "tokens")],
        "by_model": by_model,
        "totals": {
            "requests": sum(row["requests"] for row in by_model),
            "tokens": sum(row["total_tokens"] for row in by_model),
            "cost": sum((row["cost_usd"] for row in by_model), 0),
        },
        "recent": records.select_related("user").order_by("-created_at")[:RECENT],
        "since": since,
        "tab": tab,
    }


@login_required
def team(request: HttpRequest, pk: int) -> HttpResponse:
    found = get_object_or_404(permissions.admin_of_teams(request.user), pk=pk)
    if request.method == "POST":
        _team_change(request, found)
        return redirect("portal:team", pk)
    members = found.members.select_related("user").order_by("user__username")
    records = selectors.usage_in(since=_days_ago(30), team_id=found.pk)
    month = rollups.total(since=_month_start(), team_id=found.pk)
    used = {"tokens": month["total_tokens"], "cost": month["cost_usd"]}
    team_keys = (
        ApiKey.objects.filter(team=found).select_related("user").order_by("user__username", "-created_at")
    )
    context = {
        "team": found,
        "members": members,
        "team_keys": _with_month(team_keys),
        "budget": _progress(found, used),
        "caps_form": CapsForm(),
        "current_team": found.pk,
        "activity": found.audit.order_by("-at")[:RECENT],
        **_usage_context(records, team_id=found.pk, tab="team"),
    }
    return _page(request, "portal/team.html", context)


def _month_start() -> datetime:
    return timezone.now().astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _progress(team: Team, used: dict) -> list[dict]:
    """The team's budgets: used, the budget, the percentage (for a progress bar)."""
    rows = []
    for label, budget, value in (
        (_("Tokens this month"), team.token_budget, used.get("tokens") or 0),
        (_("US dollars this month"), team.usd_budget, used.get("cost") or 0),
    ):
        if budget:
            rows.append(
                {
                    "label": label,
                    "used": value,
                    "budget": budget,
                    "percent": min(100, int(value * 100 / budget)),
                }
            )
    return rows


def _team_change(request: HttpRequest, found: Team) -> None:
    """A team admin adds a member, or caps a member's key."""
    if username := request.POST.get("add_member", "").strip():
        user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()
        if user is None:
            messages.error(
                request, _("No user is named %(name)s (they sign in once first).") % {"name": username}
            )
            return
        services.team_member_add(
            team=found, user=user, admin=request.POST.get("role") == "admin", actor=request.user
        )
        messages.success(request, _("%(name)s added to %(team)s.") % {"name": username, "team": found.name})
    elif key_id := request.POST.get("cap_key", ""):
        api_key = get_object_or_404(ApiKey.objects.select_related("user"), pk=key_id, team=found)
        form = CapsForm(request.POST)
        if not form.is_valid() or not permissions.may_manage_key(request.user, api_key):
            messages.error(request, _("Those caps are not numbers of 0 or more."))
            return
        api_key.rpm, api_key.token_budget = form.cleaned_data["rpm"], form.cleaned_data["token_budget"]
        services.api_key_update(api_key=api_key, actor=request.user)
        messages.success(request, _("Caps of key %(prefix)s… saved.") % {"prefix": api_key.prefix})


def _page(request: HttpRequest, template: str, context: dict) -> HttpResponse:
    """A portal page: its navigation links the teams the user is an admin of."""
    admin_of = TeamMember.objects.filter(user=request.user, role=TeamMember.Role.ADMIN).select_related("team")
    return render(request, template, {**context, "admin_of": [m.team for m in admin_of]})
