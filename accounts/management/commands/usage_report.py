"""`manage.py usage_report [--user USERNAME] [--team TEAM] [--since YYYY-MM-DD] [--format json|table]`"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.models import Team
from accounts.selectors import usage_by_user_and_model

COLUMNS = [
    "user",
    "model",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "errors",
    "refused",
]


class Command(BaseCommand):
    help = (
        "Usage per user and model: requests, tokens, cost (USD), errors (requests that reached the "
        "router and failed) and refusals (by a key's limits or allow-list)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--user", metavar="USERNAME")
        parser.add_argument("--team", metavar="TEAM", help="Only requests made with the team's keys.")
        parser.add_argument("--since", metavar="YYYY-MM-DD", help="From this day on (UTC).")
        parser.add_argument("--format", choices=["json", "table"], default="table")

    def handle(self, *args, user, team, since, format, **options) -> None:
        team_id = None
        if team:
            found_team = Team.objects.filter(name=team).first()
            if found_team is None:
                raise CommandError(f"No team is named {team!r}.")
            team_id = found_team.pk
        user_id = None
        if user:
            user_model = get_user_model()
            found = user_model.objects.filter(**{user_model.USERNAME_FIELD: user}).first()
            if found is None:
                raise CommandError(f"No user is named {user!r}.")
            user_id = found.pk
        start = None
        if since:
            try:
                start = datetime.strptime(since, "%Y-%m-%d").replace(tzinfo=UTC)
            except ValueError:
                raise CommandError("--since takes a date as YYYY-MM-DD.") from None
        rows = usage_by_user_and_model(since=start, user_id=user_id, team_id=team_id)
        if format == "json":
            # Costs as exact decimal strings, as the API gives them.
            self.stdout.write(json.dumps(rows, indent=2, default=lambda value: f"{value:f}"))
        else:
            self.stdout.write(_table(rows))


def _table(rows: list[dict]) -> str:
    cells = [COLUMNS, *([str(row[column]) for column in COLUMNS] for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    numeric = [False, False, *[True] * (len(COLUMNS) - 2)]
    lines = [
        "  ".join(
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(line, widths, numeric, strict=True)
        )
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)
