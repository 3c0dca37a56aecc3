"""A demo workspace with realistic contacts, recorded through the ingest write path."""

import datetime as dt
import random

from django.core.management.base import BaseCommand
from django.utils import timezone

from contacts.models import Workspace
from ingest.services import ingest_messages


class Command(BaseCommand):
    help = "Create (or refill) the demo workspace with realistic contacts."

    def add_arguments(self, parser):
        parser.add_argument("--seed", type=int, default=42)

    def handle(self, *args, seed, **options):
        rng = random.Random(seed)
        workspace, _ = Workspace.objects.get_or_create(slug="demo", defaults={"name": "Demo"})
        now = timezone.now()
        messages = []
        for n in range(50):
            every = rng.choice([1, 3, 7, 30])
            for back in range(0, 120, every):
                moment = now - dt.timedelta(days=back, hours=rng.randint(0, 5))
                messages.append(
                    {
                        "type": "identify",
                        "messageId": f"demo-{seed}-{n}-{back}",
                        "timestamp": moment.isoformat(),
                        "traits": {"email": f"person{n}@example.com", "name": f"Person {n}"},
                    }
                )
        results = ingest_messages(workspace=workspace, raw_messages=messages)
        self.stdout.write(f"Demo workspace ready: {sum(r.accepted for r in results)} messages recorded.")
