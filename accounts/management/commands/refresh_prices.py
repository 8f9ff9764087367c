"""`python manage.py refresh_prices`: the price table from the router's model list."""

from __future__ import annotations

import json

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts import prices


class Command(BaseCommand):
    help = (
        "Fetch the router's model list (GET HF_BASE_URL/models, with HF_TOKEN) and store each "
        "model's price per provider; prices set in the admin are kept. Run it daily (cron)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--file", help="Read a saved /v1/models answer instead of asking the router.")

    def handle(self, *args, file, **options) -> None:
        if file:
            with open(file, encoding="utf-8") as saved:
                listing = json.load(saved)
        else:
            listing = _fetch()
        written, kept = prices.refresh(listing)
        self.stdout.write(
            f"{written} prices from the router's list; {kept} set in the admin kept as they are."
        )


def _fetch():
    if not settings.HF_TOKEN:
        raise CommandError("HF_TOKEN is not set: the router lists models for a Hugging Face token.")
    try:
        response = httpx.get(
            settings.HF_BASE_URL + "/models",
            headers={"Authorization": f"Bearer {settings.HF_TOKEN}"},
            timeout=settings.READ_TIMEOUT,
        )
        response.raise_for_status()
        return response.json()
    except (httpx.HTTPError, ValueError) as error:
        # httpx's messages name the URL, never the token.
        raise CommandError(f"Could not read the router's model list: {error}") from None
