"""`manage.py runserver` refuses: hfproxy must run under `manage.py serve`.

runserver runs async views in a throwaway event loop per request, where the usage writer cannot
live: usage records would be dropped without a word.
"""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError

REFUSAL = (
    "hfproxy does not run under runserver: it has no event loop that lives between requests, "
    "so usage records would be lost. Use `python manage.py serve` (add `--reload` while developing)."
)


class Command(BaseCommand):
    help = "Refuses: use `manage.py serve` (uvicorn; `--reload` for development)."

    def run_from_argv(self, argv: list[str]) -> None:
        # Before parsing: whatever runserver's options were given, the answer is the same.
        self.stderr.write(f"CommandError: {REFUSAL}")
        sys.exit(1)

    def handle(self, *args, **options) -> None:
        raise CommandError(REFUSAL)
