"""`manage.py create_api_key USERNAME [--name NAME] [--hf-token TOKEN | --hf-token-name NAME]
[--rpm N] [--tpm N] [--token-budget N] [--max-parallel N] [--models a,b] [--expires-in-days N]`

Creates the user if needed and prints the new key alone on the last line of stdout.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from accounts import services
from accounts.models import HuggingFaceToken, Team


class Command(BaseCommand):
    help = "Create an API key for a user (created if needed); the key is printed on the last line."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="A label for the key.")
        token = parser.add_mutually_exclusive_group()
        token.add_argument(
            "--hf-token",
            metavar="TOKEN",
            help="A personal Hugging Face token for this user's key ('-' reads it from stdin).",
        )
        token.add_argument(
            "--hf-token-name",
            metavar="NAME",
            help="Use an existing Hugging Face token (shared or this user's).",
        )

        for flag, help_text in (
            ("--rpm", "Requests per minute."),
            ("--tpm", "Tokens per minute."),
            ("--token-budget", "Tokens per calendar month (UTC)."),
            ("--max-parallel", "Requests in flight at once."),
        ):
            parser.add_argument(flag, type=int, metavar="N", help=help_text)
        parser.add_argument(
            "--usd-budget",
            type=Decimal,
            metavar="USD",
            help="US dollars per calendar month (UTC), e.g. 25.50.",
        )
        parser.add_argument("--models", default="", help="Allowed model ids or * patterns, comma-separated.")
        parser.add_argument(
            "--team", metavar="TEAM", help="One of the user's teams: the key counts against its limits too."
        )
        parser.add_argument(
            "--expires-in-days", type=int, metavar="N", help="The key stops working after N days."
        )

    def handle(
        self, *args, username, name, hf_token, hf_token_name, models, expires_in_days, team, **options
    ) -> None:
        if expires_in_days is not None and expires_in_days <= 0:
            raise CommandError("--expires-in-days takes a positive number of days.")
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        limits = {
            name: options[name] for name in ("rpm", "tpm", "token_budget", "usd_budget", "max_parallel")
        }
        if any(value is not None and not (value >= 0) for value in limits.values()):  # NaN too
            raise CommandError("Limits are 0 or more.")
        if hf_token == "-":
            hf_token = sys.stdin.readline().strip()
        try:
            with transaction.atomic():
                user = services.user_get_or_create(username=username)
                token = None
                if hf_token:
                    token = services.hf_token_create(
                        name=_free_token_name(username), value=hf_token, owner=user
                    )
                elif hf_token_name:
                    token = HuggingFaceToken.objects.filter(name=hf_token_name).first()
                    if token is None:
                        raise CommandError(f"No Hugging Face token is named {hf_token_name!r}.")
                api_key, plaintext = services.api_key_create(
                    user=user,
                    name=name,
                    hf_token=token,
                    expires_at=expires_at,
                    allowed_models=models,
                    team=_team(team) if team else None,
                    **limits,
                )
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None
        upstream = f"Hugging Face token {token.name!r} ({token.masked})" if token else "the server's HF_TOKEN"
        self.stderr.write(f"Created key {api_key.prefix}… for {username}, calling with {upstream}.")
        self.stderr.write("Store it now: it is not kept and cannot be shown again.")
        self.stdout.write(plaintext)


def _team(name: str) -> Team:
    team = Team.objects.filter(name=name).first()
    if team is None:
        raise CommandError(f"No team is named {name!r} (manage.py create_team).")
    return team


def _free_token_name(username: str) -> str:
    name, number = username, 1
    while HuggingFaceToken.objects.filter(name=name).exists():
        number += 1
        name = f"{username}-{number}"
    return name
