"""`manage.py reencrypt_tokens`: after putting a new key first in FIELD_ENCRYPTION_KEY."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts import crypto, services


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored Hugging Face token with the first key of FIELD_ENCRYPTION_KEY. "
        "Afterwards the old keys can be removed from the list."
    )

    def handle(self, *args, **options) -> None:
        try:
            count = services.hf_tokens_reencrypt()
        except crypto.DecryptionError:
            raise CommandError(
                "A stored token cannot be decrypted with any key in FIELD_ENCRYPTION_KEY; nothing was changed."
            ) from None
        self.stdout.write(f"Re-encrypted {count} Hugging Face token(s) with the first key.")
