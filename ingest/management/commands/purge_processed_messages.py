import datetime as dt

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from contacts.models import Workspace
from ingest.models import ProcessedMessage


class Command(BaseCommand):
    help = "Forget processed messageIds older than PROCESSED_MESSAGE_RETENTION_DAYS (default 30)."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=None)

    def handle(self, *args, days=None, **options):
        days = settings.PROCESSED_MESSAGE_RETENTION_DAYS if days is None else days
        cutoff = timezone.now() - dt.timedelta(days=days)
        deleted = 0
        # Workspace by workspace: each delete is a range scan of the ledger's
        # (workspace, received_at) index, the one index every message writes for this.
        for workspace_id in Workspace.objects.order_by("pk").values_list("pk", flat=True).iterator():
            count, _ = ProcessedMessage.objects.filter(workspace_id=workspace_id, received_at__lt=cutoff).delete()
            deleted += count
        self.stdout.write(f"Purged {deleted} processed message ids older than {days} days.")
