"""`manage.py prune_usage --days N [--dry-run]`: usage records older than N days become daily sums."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts import retention


class Command(BaseCommand):
    help = (
        "Replace usage records older than N days (whole UTC days) by daily sums per key, endpoint, "
        "model and outcome, which lifetime budgets and usage_report keep counting."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--days", type=int, required=True, help=f"Keep this many days (at least {retention.MIN_DAYS})."
        )
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be pruned.")

    def handle(self, *args, days, dry_run, **options) -> None:
        try:
            pruned = retention.prune(days, dry_run=dry_run)
        except (ValueError, retention.ConcurrentPrune) as error:
            raise CommandError(str(error)) from None
        before = f"before {pruned.cutoff:%Y-%m-%d}"
        if dry_run:
            self.stdout.write(
                f"Would sum and delete {pruned.records} records of {pruned.days} days {before}."
            )
        else:
            self.stdout.write(
                f"Summed {pruned.records} records of {pruned.days} days {before} into {pruned.groups} daily rows, "
                "and deleted them."
            )
