"""python manage.py create_user NAME --role ROLE [--password P]"""

from django.core.management.base import BaseCommand, CommandError

from accounts.services import user_create
from core.roles import Role


class Command(BaseCommand):
    help = "Create a user with one of the roles: annotator, adjudicator, researcher, admin."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=[r.value for r in Role])
        parser.add_argument("--email", default="")
        parser.add_argument("--password", help="Generated and printed when omitted.")

    def handle(self, *args, username: str, role: str, email: str, password: str | None, **options):
        from django.contrib.auth import get_user_model

        if get_user_model().objects.filter(username=username).exists():
            raise CommandError(f"User {username!r} already exists.")
        user, password = user_create(username=username, role=Role(role), password=password, email=email)
        self.stdout.write(f"Created {role} {user.username} with password: {password}")
