"""Reads: keys as an admin names them, usage as the report, the admin, the dashboard and the API
total it, and the Hugging Face tokens the router refused."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import (
    Count,
    DecimalField,
    Exists,
    F,
    IntegerField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts import allowlist, keys
from accounts.models import REJECTED_TOKEN, ApiKey, Outcome, UsageRecord, UsageRollup, UserPolicy

# --- Keys --------------------------------------------------------------------------------------


def api_key_find(key_or_prefix: str) -> ApiKey:
    """The key a full key or its display prefix names; ValidationError if none or several."""
    if keys.looks_like_a_key(key_or_prefix) and len(key_or_prefix) > keys.DISPLAY_LENGTH:
        found = ApiKey.objects.filter(digest=keys.digest(key_or_prefix))
    else:
        found = (
            ApiKey.objects.filter(prefix__startswith=key_or_prefix)
            if len(key_or_prefix) >= 6
            else ApiKey.objects.none()
        )
    matches = list(found[:2])
    if not matches:
        raise ValidationError(f"No API key matches {key_or_prefix[: keys.DISPLAY_LENGTH]!r}.")
    if len(matches) > 1:
        raise ValidationError(f"Several API keys match {key_or_prefix!r}; give more of it.")
    return matches[0]


def api_key_allowed_models(api_key: ApiKey) -> tuple[str, ...]:
    """The models a key may use: its own allow-list, else its user's (empty: any model)."""
    user_policy = UserPolicy.objects.filter(user_id=api_key.user_id).first()
    return allowlist.parse_models(api_key.allowed_models or (user_policy and user_policy.allowed_models))


RECENT = timedelta(days=30)


def _key_usage(column: str, since: datetime):
    """A key's `column` ("requests" or a summed one) since `since`: correlated subqueries, which
    the database computes for the keys on the page only, over the records of the ragged first
    hour, then the hourly and daily rollups (accounts.rollups)."""
    from accounts import rollups

    parts = []
    for piece in rollups.pieces(since, None):
        if piece.source == "records":
            rows = UsageRecord.objects.filter(created_at__gte=piece.start, created_at__lt=piece.end)
            value = Count("*") if column == "requests" else Sum(column)
        else:
            rows = UsageRollup.objects.filter(span=piece.source, start__gte=piece.start)
            if piece.end is not None:
                rows = rows.filter(start__lt=piece.end)
            value = Sum(column)
        summed = rows.filter(api_key=OuterRef("pk")).order_by().values("api_key").annotate(value=value)
        parts.append(Coalesce(Subquery(summed.values("value"), output_field=IntegerField()), 0))
    return sum(parts[1:], parts[0])


def with_recent_usage(api_keys: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
    """`api_keys` with their requests and tokens of the last 30 days (`requests_30d`,
    `tokens_30d`) and their tokens this calendar month (`tokens_this_month`), in the list's
    one query."""
    now = timezone.now()
    return api_keys.annotate(
        requests_30d=_key_usage("requests", now - RECENT),
        tokens_30d=_key_usage("total_tokens", now - RECENT),
        tokens_this_month=_key_usage(
            "total_tokens", now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        ),
    )


# --- Usage -------------------------------------------------------------------------------------


def cost_sum() -> Coalesce:
    """The sum of `cost_usd` (records or daily sums), 0 when none has a cost."""
    return Coalesce(
        Sum("cost_usd"), Value(Decimal(0)), output_field=DecimalField(max_digits=20, decimal_places=8)
    )


# Refused by the key's policy or malformed: answered by the proxy itself, never sent upstream.
NOT_SENT_UPSTREAM = (Outcome.REFUSED, Outcome.BAD_REQUEST)
# Requests that reached the router and failed: what an error rate is over.
UPSTREAM_FAILURES = ~Q(outcome=Outcome.OK) & ~Q(outcome__in=NOT_SENT_UPSTREAM)

USAGE_TOTALS = {
    "requests": Count("id"),
    "prompt_tokens": Coalesce(Sum("prompt_tokens"), 0),
    "completion_tokens": Coalesce(Sum("completion_tokens"), 0),
    "total_tokens": Coalesce(Sum("total_tokens"), 0),
    "cost_usd": cost_sum(),
    "errors": Count("id", filter=UPSTREAM_FAILURES),
    "refused": Count("id", filter=Q(outcome=Outcome.REFUSED)),
}


def usage_in(
    *, since: datetime | None = None, user_id: int | None = None, team_id: int | None = None
) -> QuerySet[UsageRecord]:
    records = UsageRecord.objects.all()
    if since is not None:
        records = records.filter(created_at__gte=since)
    if user_id is not None:
        records = records.filter(user_id=user_id)
    if team_id is not None:
        records = records.filter(team_id=team_id)
    return records


def usage_by_user_and_model(
    *, since: datetime | None = None, user_id: int | None = None, team_id: int | None = None
) -> list[dict]:
    """One row per (user, model requested): requests, tokens, errors (of requests that reached
    the router) and refusals, summed from the rollups, which count pruned records too."""
    from accounts import rollups

    found = rollups.totals(since=since, user_id=user_id, team_id=team_id, by=("user_id", "model_requested"))
    names = usernames(user for user, _ in found)
    rows = [
        {"user": names[user], "model": model, **{name: total[name] for name in USAGE_TOTALS}}
        for (user, model), total in found.items()
    ]
    return sorted(rows, key=lambda row: (row["user"], row["model"]))


def usernames(user_ids) -> dict[int, str]:
    """Each user's username by id ("#id" for a user deleted since)."""
    user_ids = set(user_ids)
    user_model = get_user_model()
    found = dict(user_model.objects.filter(pk__in=user_ids).values_list("pk", user_model.USERNAME_FIELD))
    return {user_id: found.get(user_id, f"#{user_id}") for user_id in user_ids}


# --- Hugging Face tokens the router refused ----------------------------------------------------


def last_rejection() -> Subquery:
    """For a Hugging Face token queryset: when the router last refused the token (401) since
    its value was set, or None. Reads the partial index of refused requests only."""
    refused = UsageRecord.objects.filter(
        error_code=REJECTED_TOKEN, hf_token=OuterRef("pk"), created_at__gte=OuterRef("value_set_at")
    )
    return Subquery(refused.order_by("-created_at").values("created_at")[:1])


def worked_since(rejected_at: str) -> Exists:
    """For a token queryset annotated with `rejected_at`: a request with it succeeded since."""
    return Exists(
        UsageRecord.objects.filter(
            hf_token=OuterRef("pk"), outcome=Outcome.OK, created_at__gt=OuterRef(rejected_at)
        )
    )


REJECTIONS_SHOWN_FOR = timedelta(hours=24)


def recent_rejections() -> list[dict]:
    """Tokens the router refused within REJECTIONS_SHOWN_FOR, newest first: {"token", "times",
    "last"}; "token" is None for the server's HF_TOKEN. A token that has worked since (a request
    with it succeeded, or it was given a new value) is left out."""
    since = timezone.now() - REJECTIONS_SHOWN_FOR
    rows = (
        UsageRecord.objects.filter(error_code=REJECTED_TOKEN, created_at__gte=since)
        .filter(Q(hf_token__isnull=True) | Q(created_at__gte=F("hf_token__value_set_at")))
        .values("hf_token_id", "hf_token__name")
        .annotate(times=Count("id"), last=Max("created_at"))
        .order_by("-last")
    )
    return [
        {"token": row["hf_token__name"], "times": row["times"], "last": row["last"]}
        for row in rows
        if not UsageRecord.objects.filter(
            hf_token_id=row["hf_token_id"], outcome=Outcome.OK, created_at__gt=row["last"]
        ).exists()
    ]
