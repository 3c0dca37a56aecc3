from django.core.management.base import BaseCommand

from contacts.models import Contact


class Command(BaseCommand):
    help = "Recompute every contact's closeness_log and last interaction day from its interactions."

    def add_arguments(self, parser):
        parser.add_argument("--workspace", help="only this workspace's slug")

    def handle(self, *args, workspace=None, **options):
        contacts = Contact.objects.all()
        if workspace:
            contacts = contacts.filter(workspace__slug=workspace)
        changed = total = 0
        for contact_ids in _chunks(contacts.order_by("pk").values_list("pk", flat=True).iterator(), 1000):
            total += len(contact_ids)
            changed += Contact.recompute_closeness(contact_ids)
        self.stdout.write(f"Recomputed closeness of {total} contacts ({changed} changed).")


def _chunks(iterable, size):
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
