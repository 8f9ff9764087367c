"""`python manage.py refresh_prices`: the price table from the router's model list."""

from __future__ import annotations

import json

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts import prices


class Command(BaseCommand):
    help = (
        "Fetch the router's model list (GET HF_BASE_URL/models, with HF_TOKEN) and store each "
        "model's price per provider; prices set in the admin are kept. The server also does it "
        "every PRICES_REFRESH_INTERVAL."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--file", help="Read a saved /v1/models answer instead of asking the router.")

    def handle(self, *args, file, **options) -> None:
        if file:
            with open(file, encoding="utf-8") as saved:
                written, kept = prices.refresh(json.load(saved))
        else:
            written, kept = _from_router()
        self.stdout.write(
            f"{written} prices from the router's list; {kept} set in the admin kept as they are."
        )


@async_to_sync
async def _from_router() -> tuple[int, int]:
    from gateway import catalog, upstream
    from gateway.errors import from_exception

    if not settings.HF_TOKEN:
        raise CommandError("HF_TOKEN is not set: the router lists models for a Hugging Face token.")
    try:
        return await catalog.refresh_prices()
    except Exception as error:
        # The same words a client would get; never the token.
        raise CommandError(
            f"Could not read the router's model list: {from_exception(error, 'HF_TOKEN', settings.HF_TOKEN).message}"
        ) from None
    finally:
        await upstream.aclose()
