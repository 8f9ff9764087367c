from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts import services
from accounts.models import HuggingFaceToken


class Command(BaseCommand):
    help = "Create a team: shared monthly budgets, caps per member, whom the router bills."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--usd-budget", type=Decimal, metavar="USD", help="The team's US dollars a month."
        )
        parser.add_argument("--token-budget", type=int, metavar="N", help="The team's tokens a month.")
        parser.add_argument("--member-rpm", type=int, metavar="N", help="Requests per minute, per member.")
        parser.add_argument("--member-tpm", type=int, metavar="N", help="Tokens per minute, per member.")
        parser.add_argument(
            "--member-token-budget", type=int, metavar="N", help="Tokens a month, per member."
        )
        parser.add_argument(
            "--member-usd-budget", type=Decimal, metavar="USD", help="US dollars a month, per member."
        )
        parser.add_argument("--models", default="", help="Allowed model ids or * patterns for its keys.")
        parser.add_argument(
            "--hf-token-name", metavar="NAME", help="A shared Hugging Face token for its keys."
        )
        parser.add_argument(
            "--bill-to", default="", metavar="ORG", help="The Hugging Face organisation the router bills."
        )

    def handle(self, *args, name, models, hf_token_name, bill_to, **options) -> None:
        limits = {
            field: options[field]
            for field in (
                "usd_budget",
                "token_budget",
                "member_rpm",
                "member_tpm",
                "member_token_budget",
                "member_usd_budget",
            )
        }
        if any(value is not None and not (value >= 0) for value in limits.values()):  # NaN too
            raise CommandError("Limits are 0 or more.")
        token = None
        if hf_token_name:
            token = HuggingFaceToken.objects.filter(name=hf_token_name).first()
            if token is None:
                raise CommandError(f"No Hugging Face token is named {hf_token_name!r}.")
        try:
            team = services.team_create(
                name=name, allowed_models=models, hf_token=token, bill_to=bill_to, **limits
            )
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None
        self.stdout.write(f"Created team {team.name!r}.")
