import datetime as dt

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from ingest.models import ProcessedMessage


class Command(BaseCommand):
    help = "Forget processed messageIds older than PROCESSED_MESSAGE_RETENTION_DAYS (default 30)."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=None)

    def handle(self, *args, days=None, **options):
        days = settings.PROCESSED_MESSAGE_RETENTION_DAYS if days is None else days
        cutoff = timezone.now() - dt.timedelta(days=days)
        deleted, _ = ProcessedMessage.objects.filter(received_at__lt=cutoff).delete()
        self.stdout.write(f"Purged {deleted} processed message ids older than {days} days.")
