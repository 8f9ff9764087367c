"""`manage.py prune_usage --days N [--dry-run]`: usage records older than N days go; the rollups stay."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts import retention


class Command(BaseCommand):
    help = (
        "Delete usage records older than N days (whole UTC days). Their hourly and daily rollups "
        "stay: budgets, usage_report, the API and the dashboard keep counting them."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--days", type=int, required=True, help=f"Keep this many days (at least {retention.MIN_DAYS})."
        )
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be pruned.")

    def handle(self, *args, days, dry_run, **options) -> None:
        try:
            pruned = retention.prune(days, dry_run=dry_run)
        except ValueError as error:
            raise CommandError(str(error)) from None
        before = f"before {pruned.cutoff:%Y-%m-%d}"
        if dry_run:
            self.stdout.write(f"Would delete {pruned.records} records of {pruned.days} days {before}.")
        else:
            self.stdout.write(
                f"Deleted {pruned.records} records of {pruned.days} days {before}; their rollups stay."
            )
