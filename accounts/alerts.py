"""Alerts: a monthly budget crossing a threshold (ALERT_THRESHOLDS, 80 % and 100 %) — a key's (or
its user's default for keys), a user's on all their keys, a team's, or a team's cap per member —
and a Hugging Face token the router refuses.

Each alert is sent once: its `AlertSent` row is its identity (key 12's token budget, this month,
80 %), claimed by one worker at a time with an atomic update, marked sent once delivered, and
claimed again after ALERT_RETRY_SECONDS when delivery failed. Recipients: the owner (the key's
user, the member, the token's owner) and the team admins, or the staff for a shared token; by email (Django's
email backend: EMAIL_URL) and to ALERT_WEBHOOK_URL (Slack-compatible JSON: {"text": …}).

`check()` runs off the request path: every ALERTS_INTERVAL seconds in each worker (a thread of
the database's, `offloop`), or `manage.py send_alerts`. It reads this month's sums from the
usage table's indexes, never a request's counters.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.utils import timezone

logger = logging.getLogger("hfproxy.alerts")


@dataclass
class Alert:
    key: str  # what makes it one alert: sent once
    text: str
    emails: set[str] = field(default_factory=set)


def _month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _crossed(used, budget) -> list[int]:
    """The thresholds (percent) `used` has reached of `budget`."""
    if not budget:
        return []
    return [t for t in settings.ALERT_THRESHOLDS if used * 100 >= budget * t]


def _budget_alerts(now: datetime) -> list[Alert]:
    """Every budget with a threshold crossed this month: each key's (its own, else its user's
    default), each user's on all their keys, each team's, and each member's within a team."""
    from accounts.models import ApiKey, Team, TeamMember, UsageRecord, UserPolicy

    since = _month_start(now)
    month = f"{since:%Y%m}"
    found: list[Alert] = []
    this_month = UsageRecord.objects.filter(created_at__gte=since)
    sums = {"tokens": Sum("total_tokens"), "cost": Sum("cost_usd")}

    def add(ident: str, whose: str, tokens_budget, usd_budget, used: dict, emails: set[str]) -> None:
        for kind, budget, value, unit in (
            ("tokens", tokens_budget, used.get("tokens") or 0, "tokens"),
            ("usd", usd_budget, Decimal(used.get("cost") or 0), "USD"),
        ):
            for threshold in _crossed(value, budget):
                found.append(
                    Alert(
                        key=f"{ident}:{kind}:{month}:{threshold}",
                        text=(
                            f"hfproxy: {whose} has used {threshold} % of its monthly budget "
                            f"({_amount(value, unit)} of {_amount(budget, unit)})."
                        ),
                        emails=emails - {""},
                    )
                )

    policies = {
        p.user_id: p
        for p in UserPolicy.objects.select_related("user").filter(
            Q(token_budget__isnull=False)
            | Q(usd_budget__isnull=False)
            | Q(total_token_budget__isnull=False)
            | Q(total_usd_budget__isnull=False)
        )
    }
    keys = (
        ApiKey.objects.active()
        .select_related("user")
        .filter(Q(token_budget__isnull=False) | Q(usd_budget__isnull=False) | Q(user_id__in=list(policies)))
    )
    by_key = {
        row["api_key_id"]: row
        for row in this_month.filter(api_key__in=keys).values("api_key_id").annotate(**sums)
    }
    for key in keys:
        policy = policies.get(key.user_id)
        add(
            f"key:{key.pk}",
            f"key {key.prefix} of {key.user.get_username()}",
            key.token_budget or (policy and policy.token_budget),
            key.usd_budget or (policy and policy.usd_budget),
            by_key.get(key.pk, {}),
            {key.user.email},
        )
    totals = [p for p in policies.values() if p.total_token_budget or p.total_usd_budget]
    by_user = {
        row["user_id"]: row
        for row in this_month.filter(user_id__in=[p.user_id for p in totals])
        .values("user_id")
        .annotate(**sums)
    }
    for policy in totals:
        add(
            f"user:{policy.user_id}",
            f"{policy.user.get_username()} (all keys)",
            policy.total_token_budget,
            policy.total_usd_budget,
            by_user.get(policy.user_id, {}),
            {policy.user.email},
        )
    teams = list(
        Team.objects.filter(
            Q(token_budget__isnull=False)
            | Q(usd_budget__isnull=False)
            | Q(member_token_budget__isnull=False)
            | Q(member_usd_budget__isnull=False)
        )
    )
    admins: dict[int, set[str]] = {}
    for team_id, email in TeamMember.objects.filter(team__in=teams, role=TeamMember.Role.ADMIN).values_list(
        "team_id", "user__email"
    ):
        admins.setdefault(team_id, set()).add(email)
    by_team = {
        row["team_id"]: row for row in this_month.filter(team__in=teams).values("team_id").annotate(**sums)
    }
    capped = {team.pk: team for team in teams if team.member_token_budget or team.member_usd_budget}
    by_member = {
        (row["team_id"], row["user_id"]): row
        for row in this_month.filter(team_id__in=list(capped)).values("team_id", "user_id").annotate(**sums)
    }
    members = TeamMember.objects.filter(team_id__in=list(capped)).select_related("user")
    for team in teams:
        add(
            f"team:{team.pk}",
            f"team {team.name}",
            team.token_budget,
            team.usd_budget,
            by_team.get(team.pk, {}),
            admins.get(team.pk, set()),
        )
    for member in members:
        team = capped[member.team_id]
        add(
            f"member:{team.pk}:{member.user_id}",
            f"{member.user.get_username()} in team {team.name}",
            team.member_token_budget,
            team.member_usd_budget,
            by_member.get((team.pk, member.user_id), {}),
            {member.user.email} | admins.get(team.pk, set()),
        )
    return found


def _amount(value, unit: str) -> str:
    return f"${Decimal(value):.2f}" if unit == "USD" else f"{int(value):,} tokens"


def _token_alerts() -> list[Alert]:
    """Tokens the router refused since their value was set: once per value."""
    from django.contrib.auth import get_user_model

    from accounts.models import HuggingFaceToken
    from accounts.selectors import last_rejection

    staff = set(
        get_user_model().objects.filter(is_staff=True, is_active=True).values_list("email", flat=True)
    ) - {""}
    found = []
    for token in (
        HuggingFaceToken.objects.select_related("owner")
        .annotate(rejected_at=last_rejection())
        .filter(rejected_at__isnull=False)
    ):
        owner = {token.owner.email} - {""} if token.owner else set()
        found.append(
            Alert(
                key=f"token:{token.pk}:{token.value_set_at:%Y%m%d%H%M%S%f}",
                text=(
                    f"hfproxy: Hugging Face refused the token {token.name} ({token.masked}); requests "
                    "with it fail until it is given a new value."
                ),
                emails=owner | staff,
            )
        )
    return found


def _claim(alert: Alert, now: datetime) -> bool:
    """Whether this worker delivers it now: not sent, and nobody else is trying."""
    from accounts.models import AlertSent

    until = now + timedelta(seconds=settings.ALERT_RETRY_SECONDS)
    try:
        with transaction.atomic():  # a savepoint: the failed insert leaves any transaction usable
            AlertSent.objects.create(key=alert.key, text=alert.text[:500], claimed_until=until)
        return True
    except IntegrityError:
        pass
    return bool(
        AlertSent.objects.filter(key=alert.key, sent_at__isnull=True, claimed_until__lt=now).update(
            claimed_until=until
        )
    )


def _deliver(alert: Alert) -> None:
    """By email and webhook, as configured; raises if either fails."""
    if alert.emails and settings.EMAIL_URL:
        send_mail(alert.text[:120], alert.text, settings.DEFAULT_FROM_EMAIL, sorted(alert.emails))
    if settings.ALERT_WEBHOOK_URL:
        response = httpx.post(settings.ALERT_WEBHOOK_URL, json={"text": alert.text}, timeout=10)
        response.raise_for_status()


def check(now: datetime | None = None) -> int:
    """Send the alerts due and not sent yet; the number sent. Synchronous: the database's."""
    from accounts.models import AlertSent

    now = now or timezone.now()
    sent = 0
    for alert in [*_budget_alerts(now), *_token_alerts()]:
        if not _claim(alert, now):
            continue
        try:
            _deliver(alert)
        except Exception as error:  # kept claimed until ALERT_RETRY_SECONDS, then tried again
            AlertSent.objects.filter(key=alert.key).update(last_error=str(error)[:200])
            logger.warning("Sending an alert failed (tried again later): %s", error)
            continue
        AlertSent.objects.filter(key=alert.key).update(sent_at=timezone.now(), last_error="")
        sent += 1
    return sent


async def check_every(seconds: float) -> None:
    """`check()` now and every `seconds`, off the event loop (each worker: claims are atomic)."""
    from accounts import offloop

    while True:
        try:
            await offloop.run(check)
        except Exception:
            logger.exception("Checking alerts failed; tried again in %s s", seconds)
        await asyncio.sleep(seconds)
