"""The self-service API for key holders (DRF), authenticated with the same bearer key.

GET /api/me      who am I, and my keys (never their secrets)
GET /api/usage   my usage by model and day (?since=YYYY-MM-DD, default the last 30 days)
Staff with the view permission on usage records may pass ?user=USERNAME to either; nobody else
sees another user's data. `/api/usage?team=TEAM`: the team's usage by day, model and member, for
its team admins and those staff.
GET /api/audit   the audit trail, newest first: all of it for staff with the view permission on
                 it; `?team=TEAM` a team's, for its team admins too. `?since=YYYY-MM-DD`,
                 `?before=` (the `next_before` of the page before), `?limit=` (at most 500).
Errors come in OpenAI's format like the rest of the proxy (gateway.errors.rest_framework_handler).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.contrib.auth import get_user_model
from rest_framework import exceptions, serializers
from rest_framework.decorators import api_view
from rest_framework.response import Response

from accounts import permissions, rollups
from accounts.models import ApiKey, AuditEntry, Team
from accounts.selectors import USAGE_TOTALS, usernames


class KeySerializer(serializers.ModelSerializer):
    status = serializers.CharField(read_only=True)
    hf_token = serializers.SerializerMethodField()

    class Meta:
        model = ApiKey
        fields = [
            "prefix",
            "name",
            "status",
            "created_at",
            "last_used_at",
            "expires_at",
            "revoked_at",
            "hf_token",
        ]

    def get_hf_token(self, key: ApiKey) -> dict | None:
        if key.hf_token is None:
            return None
        return {"name": key.hf_token.name, "masked": key.hf_token.masked, "shared": key.hf_token.is_shared}


def _subject(request):
    """Whose data: the caller's own, or (staff who may view usage) the user named by ?user=."""
    username = request.query_params.get("user")
    if not username or username == request.user.get_username():
        return request.user
    if not permissions.may_view_usage(request.user):
        raise exceptions.PermissionDenied("Only staff who may view usage may see another user's data.")
    user_model = get_user_model()
    found = user_model.objects.filter(**{user_model.USERNAME_FIELD: username}).first()
    if found is None:
        raise exceptions.NotFound(f"No user is named {username!r}.")
    return found


@api_view(["GET"])
def me(request):
    user = _subject(request)
    api_keys = ApiKey.objects.filter(user=user).select_related("hf_token")
    return Response(
        {
            "username": user.get_username(),
            "is_staff": user.is_staff,
            "current_key": request.auth.key_prefix if user == request.user else None,
            "keys": KeySerializer(api_keys, many=True).data,
        }
    )


def _team(request, may_view=permissions.may_view_team, may_view_all=permissions.may_view_usage, what="usage"):
    """The team of ?team=, which the caller may see (its team admins, staff who may view `what`)."""
    name = request.query_params.get("team")
    if not name:
        return None
    team = Team.objects.filter(name=name).first()
    # The same answer whether it exists or not, for those who may not see it.
    if team is None or not may_view(request.user, team):
        if may_view_all(request.user):
            raise exceptions.NotFound(f"No team is named {name!r}.")
        raise exceptions.PermissionDenied(
            f"Only the team's admins and staff who may view {what} see a team's {what}."
        )
    return team


def _since(request) -> datetime | None:
    text = request.query_params.get("since")
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise exceptions.ParseError("`since` takes a date as YYYY-MM-DD.") from None


@api_view(["GET"])
def usage(request):
    team = _team(request)
    user = None if team is not None else _subject(request)
    since = _since(request) or datetime.now(UTC).replace(
        hour=0, minute=0, second=0, microsecond=0
    ) - timedelta(days=30)
    if team is not None:
        by_member = _by_day(since=since, team_id=team.pk, by_member=True)
        return Response({"team": team.name, "since": since.date().isoformat(), "usage": by_member})
    rows = _by_day(since=since, user_id=user.pk)
    return Response({"user": user.get_username(), "since": since.date().isoformat(), "usage": rows})


def _by_day(*, since: datetime, by_member: bool = False, **whose) -> list[dict]:
    """Usage summed by day (UTC) and model (and, `by_member`, user), from the rollups."""
    found = rollups.totals(
        since=since,
        bucket=rollups.day_of,
        by=("model_requested", "user_id") if by_member else ("model_requested",),
        **whose,
    )
    names = usernames(group[2] for group in found) if by_member else {}
    rows = [
        {
            "day": group[0].isoformat(),
            "model": group[1],
            **({"user": names[group[2]]} if by_member else {}),
            **{name: total[name] for name in USAGE_TOTALS},
        }
        for group, total in found.items()
    ]
    return sorted(rows, key=lambda row: (row["day"], row["model"], row.get("user", "")))


AUDIT_PAGE = 500


@api_view(["GET"])
def audit(request):
    team = _team(
        request,
        may_view=permissions.may_view_audit,
        may_view_all=permissions.may_view_audit,
        what="audit trail",
    )
    if team is None and not permissions.may_view_audit(request.user):
        raise exceptions.PermissionDenied(
            "Only staff who may view the audit trail see all of it; a team's admins see the team's (?team=)."
        )
    # Newest first by id (entries are numbered as written): a page ends where the next begins.
    entries = AuditEntry.objects.select_related("team").order_by("-pk")
    if team is not None:
        entries = entries.filter(team=team)
    if since := _since(request):
        entries = entries.filter(at__gte=since)
    if before := request.query_params.get("before"):
        if not before.isdigit():
            raise exceptions.ParseError("`before` takes the `next_before` of the page before.")
        entries = entries.filter(pk__lt=int(before))
    try:
        limit = min(AUDIT_PAGE, max(1, int(request.query_params.get("limit", 100))))
    except ValueError:
        raise exceptions.ParseError("`limit` takes a number.") from None
    page = list(entries[: limit + 1])
    more, page = len(page) > limit, page[:limit]
    return Response(
        {
            "team": team.name if team is not None else None,
            "entries": [
                {
                    "at": entry.at.isoformat(),
                    "actor": entry.actor_name or None,
                    "action": entry.action,
                    "target": entry.target,
                    "team": entry.team.name if entry.team else None,
                    "detail": entry.detail,
                    "source": entry.source,
                }
                for entry in page
            ],
            "next_before": page[-1].pk if more else None,
        }
    )
