import datetime as dt

from django.core.management.base import BaseCommand, CommandError

from contacts.management.lookups import workspace_by_slug
from ingest.api_keys import rotate_api_key


class Command(BaseCommand):
    help = "Make a new API key for a workspace (printed alone on the last line); old keys expire after the grace."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--grace-hours", type=float, default=24.0)

    def handle(self, *args, slug, grace_hours, **options):
        if grace_hours < 0:
            raise CommandError("--grace-hours must be 0 or more")
        workspace = workspace_by_slug(slug)
        _, raw_key = rotate_api_key(workspace=workspace, grace=dt.timedelta(hours=grace_hours))
        self.stdout.write(f"Rotated the API key of {workspace.name!r}; old keys stay valid for {grace_hours:g} hours.")
        self.stdout.write(raw_key)
