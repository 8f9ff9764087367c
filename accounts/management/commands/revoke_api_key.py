"""`manage.py revoke_api_key KEY_OR_PREFIX`"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts import selectors, services


class Command(BaseCommand):
    help = "Revoke an API key, given in full or by its display prefix (hfp_xxxxxxxx)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("key_or_prefix")

    def handle(self, *args, key_or_prefix, **options) -> None:
        try:
            api_key = selectors.api_key_find(key_or_prefix)
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None
        already = api_key.revoked_at is not None
        services.api_key_revoke(api_key=api_key)
        state = "was already revoked" if already else "is revoked"
        self.stdout.write(f"Key {api_key.prefix}… ({api_key.name or 'unnamed'}) of {api_key.user} {state}.")
