from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts import services
from accounts.models import Team


class Command(BaseCommand):
    help = "Add a user (created if needed) to a team, as a member or a team admin."

    def add_arguments(self, parser) -> None:
        parser.add_argument("team")
        parser.add_argument("username")
        parser.add_argument("--admin", action="store_true", help="A team admin: sees and manages the team.")

    def handle(self, *args, team, username, admin, **options) -> None:
        found = Team.objects.filter(name=team).first()
        if found is None:
            raise CommandError(f"No team is named {team!r} (manage.py create_team).")
        try:
            user = services.user_get_or_create(username=username)
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None
        member = services.team_member_add(team=found, user=user, admin=admin)
        self.stdout.write(f"{username} is a {member.get_role_display()} of {found.name!r}.")
