"""Create the demo users on first run and print their credentials (kept under var/, never in git)."""

from django.conf import settings
from django.core.management.base import BaseCommand

from accounts.services import demo_users_ensure


class Command(BaseCommand):
    help = "Create demo users (admin, two annotators, an adjudicator, a researcher) and print their passwords."

    def handle(self, *args, **options):
        users = demo_users_ensure(credentials_file=settings.VAR_DIR / "demo-users.json")
        self.stdout.write("\nDemo users (passwords kept in %s):" % (settings.VAR_DIR / "demo-users.json"))
        for user in users:
            self.stdout.write(f"  {user['username']:<12} {user['role']:<12} {user['password']}")
        self.stdout.write("")
