from django.core.management.base import BaseCommand

from accounts import alerts


class Command(BaseCommand):
    help = (
        "Send the budget and token alerts due and not sent yet (what each worker does every "
        "ALERTS_INTERVAL seconds; for cron when that is 0)."
    )

    def handle(self, *args, **options) -> None:
        self.stdout.write(f"{alerts.check()} alerts sent.")
