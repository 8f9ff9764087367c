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
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from accounts import crypto, dashboard, permissions, rollups, selectors, services
from accounts.admin.export import usage_csv_response
from accounts.admin.snippets import example_model, usage_snippets
from accounts.dashboard_page import bar_chart
from accounts.models import ApiKey, Team, TeamMember, UserPolicy

# The session's keys created and not shown yet: {primary key: the key, encrypted}.
NEW_KEYS_SESSION = "hfproxy_portal_new_keys"
RECENT = 20  # the last requests shown


class CapsForm(forms.Form):
    """A key's own caps, each within its team's cap per member (`team`, or the form's team field)."""

    rpm = forms.IntegerField(label=gettext_lazy("Requests per minute"), min_value=0, required=False)
    tpm = forms.IntegerField(label=gettext_lazy("Tokens per minute"), min_value=0, required=False)
    token_budget = forms.IntegerField(label=gettext_lazy("Monthly tokens"), min_value=0, required=False)
    usd_budget = forms.DecimalField(
        label=gettext_lazy("Monthly budget (USD)"),
        min_value=0,
        max_digits=12,
        decimal_places=2,
        required=False,
    )
    max_parallel = forms.IntegerField(label=gettext_lazy("Concurrent requests"), min_value=1, required=False)

    # Each cap, and the team's cap per member that bounds it.
    CAPS = (
        ("rpm", "member_rpm"),
        ("tpm", "member_tpm"),
        ("token_budget", "member_token_budget"),
        ("usd_budget", "member_usd_budget"),
        ("max_parallel", None),
    )

    def __init__(self, *args, team: Team | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.team = team

    def clean(self):
        data = super().clean()
        team = data.get("team", self.team)
        for field, member_cap in self.CAPS:
            cap = getattr(team, member_cap) if team is not None and member_cap else None
            if data.get(field) is not None and cap is not None and data[field] > cap:
                self.add_error(field, _("At most %(cap)s: the team's cap per member.") % {"cap": cap})
        return data

    def caps(self) -> dict:
        return {field: self.cleaned_data[field] for field, _ in self.CAPS}


class KeyForm(CapsForm):
    name = forms.CharField(label=gettext_lazy("Name"), max_length=100, required=False)
    team = forms.ModelChoiceField(label=gettext_lazy("Team"), queryset=Team.objects.none(), required=False)
    expires_in_days = forms.IntegerField(
        label=gettext_lazy("Expires in (days)"), min_value=1, max_value=3650, required=False
    )
    field_order = ["name", "team", "expires_in_days"]

    def __init__(self, user, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = Team.objects.filter(members__user=user)


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
                **form.caps(),
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
    context = {"form": form, "keys": _with_month(own), "totals": _my_totals(user), "tab": "keys"}
    return _page(request, "portal/keys.html", context)


def _my_totals(user) -> list[dict]:
    """The user's own caps on all their keys together, with what this month used of the budgets."""
    policy = UserPolicy.objects.filter(user=user).first()
    if policy is None:
        return []
    month = rollups.total(since=_month_start(), user_id=user.pk)
    used = {"tokens": month["total_tokens"], "cost": month["cost_usd"]}
    rows = []
    for label, limit, value in (
        (_("Requests per minute"), policy.total_rpm, None),
        (_("Tokens per minute"), policy.total_tpm, None),
        (_("Tokens this month"), policy.total_token_budget, used["tokens"] or 0),
        (_("US dollars this month"), policy.total_usd_budget, used["cost"] or 0),
    ):
        if limit is not None:
            percent = min(100, int(value * 100 / limit)) if value is not None and limit else None
            money = limit is policy.total_usd_budget
            rows.append({"label": label, "limit": limit, "used": value, "percent": percent, "money": money})
    return rows


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
        "invitations": found.invitations.filter(accepted_at=None).select_related("invited_by"),
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
    """A team admin adds or invites a member, changes a member's role, removes a member, cancels
    an invitation, or caps a member's key. Their own membership is not theirs to change here (a
    team must not lose its last admin by a slip)."""
    post, me = request.POST, request.user
    if name := post.get("add_member", "").strip():
        _add_member(request, found, name, admin=post.get("role") == "admin")
    elif member_id := post.get("remove_member") or post.get("set_role"):
        member = get_object_or_404(found.members.select_related("user"), user_id=member_id)
        if member.user_id == me.pk:
            messages.error(request, _("You cannot change your own membership here."))
        elif "remove_member" in post:
            services.team_member_remove(team=found, user=member.user, actor=me)
            messages.success(
                request,
                _("%(name)s removed; their keys on the team are revoked.")
                % {"name": member.user.get_username()},
            )
        else:
            services.team_member_add(
                team=found, user=member.user, admin=post.get("role") == "admin", actor=me
            )
            messages.success(request, _("Role of %(name)s saved.") % {"name": member.user.get_username()})
    elif invitation_id := post.get("cancel_invitation"):
        invitation = get_object_or_404(found.invitations, pk=invitation_id, accepted_at=None)
        services.team_invitation_cancel(invitation=invitation, actor=me)
        messages.success(request, _("Invitation of %(email)s cancelled.") % {"email": invitation.email})
    elif key_id := post.get("cap_key", ""):
        api_key = get_object_or_404(ApiKey.objects.select_related("user"), pk=key_id, team=found)
        form = CapsForm(post, team=found)
        if not permissions.may_manage_key(me, api_key):
            raise Http404
        if not form.is_valid():
            for errors in form.errors.values():
                messages.error(request, " ".join(errors))
            return
        for field, value in form.caps().items():
            setattr(api_key, field, value)
        services.api_key_update(api_key=api_key, actor=me)
        messages.success(request, _("Caps of key %(prefix)s… saved.") % {"prefix": api_key.prefix})


def _add_member(request: HttpRequest, found: Team, name: str, *, admin: bool) -> None:
    """By user name (someone who signed in before), else invite the address."""
    users = get_user_model().objects
    user = users.filter(**{users.model.USERNAME_FIELD: name}).first()
    if user is not None:
        services.team_member_add(team=found, user=user, admin=admin, actor=request.user)
        messages.success(request, _("%(name)s added to %(team)s.") % {"name": name, "team": found.name})
        return
    if "@" not in name:
        messages.error(
            request, _("No user is named %(name)s: invite them by their email address.") % {"name": name}
        )
        return
    try:
        services.team_invite(
            team=found,
            email=name,
            admin=admin,
            actor=request.user,
            sign_in_url=request.build_absolute_uri(reverse("account_login")),
        )
    except ValidationError:
        messages.error(request, _("%(email)s is not an email address.") % {"email": name})
        return
    messages.success(
        request,
        _("%(email)s is invited: they join %(team)s when they sign in with that address.")
        % {"email": name, "team": found.name},
    )


def _page(request: HttpRequest, template: str, context: dict) -> HttpResponse:
    """A portal page: its navigation links the teams the user is an admin of."""
    admin_of = TeamMember.objects.filter(user=request.user, role=TeamMember.Role.ADMIN).select_related("team")
    return render(request, template, {**context, "admin_of": [m.team for m in admin_of]})
