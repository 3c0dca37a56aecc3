from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils.text import slugify

from contacts.models import Membership, Workspace, validate_timezone
from ingest.api_keys import create_api_key


class Command(BaseCommand):
    help = "Create a workspace and its first API key (printed alone on the last line)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--slug")
        parser.add_argument("--timezone", default="UTC")
        parser.add_argument("--owner", help="username of a user who becomes a member allowed to rotate keys")

    def handle(self, *args, name, slug=None, timezone="UTC", owner=None, **options):
        slug = slug or slugify(name)
        if not slug:
            raise CommandError("A slug is needed: pass --slug")
        try:
            validate_timezone(timezone)
        except ValidationError as error:
            raise CommandError(error.messages[0]) from None
        if Workspace.objects.filter(slug=slug).exists():
            raise CommandError(f"A workspace with slug {slug!r} exists already")
        user = None
        if owner:
            try:
                user = get_user_model().objects.get(username=owner)
            except get_user_model().DoesNotExist:
                raise CommandError(f"No user {owner!r}") from None
        with transaction.atomic():
            workspace = Workspace.objects.create(name=name, slug=slug, timezone=timezone)
            if user is not None:
                Membership.objects.create(user=user, workspace=workspace)
                user.user_permissions.add(Permission.objects.get(codename="rotate_apikey", content_type__app_label="ingest"))
            _, raw_key = create_api_key(workspace=workspace, actor=user)
        self.stdout.write(f"Created workspace {workspace.name!r} (slug {workspace.slug}, timezone {workspace.timezone}).")
        if user is not None:
            self.stdout.write(f"{user.username} is a member and may rotate API keys.")
        self.stdout.write("API key (shown once; Segment's destination setting 'API Key'):")
        self.stdout.write(raw_key)
