"""What the management commands look up from their arguments, with a clear error."""

from django.core.management.base import CommandError

from contacts.models import Workspace


def workspace_by_slug(slug: str) -> Workspace:
    try:
        return Workspace.objects.get(slug=slug)
    except Workspace.DoesNotExist:
        raise CommandError(f"No workspace with slug {slug!r}") from None
