import datetime as dt

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from contacts.models import Contact, Interaction, Membership, Workspace
from ingest.api_keys import create_api_key


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    # Hashed when built, so the saved row holds it (sessions check it on every request).
    password = factory.django.Password("password")


class WorkspaceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Workspace

    name = factory.Sequence(lambda n: f"Workspace {n}")
    slug = factory.Sequence(lambda n: f"workspace-{n}")
    timezone = "UTC"


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    workspace = factory.SubFactory(WorkspaceFactory)


class ContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contact

    workspace = factory.SubFactory(WorkspaceFactory)
    email = factory.Sequence(lambda n: f"contact{n}@example.com")
    name = factory.Faker("name")


class InteractionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Interaction

    contact = factory.SubFactory(ContactFactory)
    workspace = factory.SelfAttribute("contact.workspace")
    day = factory.LazyFunction(dt.date.today)
    occurred_at = factory.LazyAttribute(
        lambda i: dt.datetime.combine(i.day, dt.time(12), tzinfo=dt.timezone.utc)
    )
    last_occurred_at = factory.SelfAttribute("occurred_at")
    description = "Identified via Segment"


def grant_rotate(user):
    user.user_permissions.add(Permission.objects.get(codename="rotate_apikey", content_type__app_label="ingest"))


def api_key_for(workspace):
    """A fresh raw API key for the workspace."""
    return create_api_key(workspace=workspace)[1]


def contact_with_days(workspace, days, **fields):
    """A contact whose timeline has one interaction on each of `days`, with closeness
    computed the way ingest leaves it (Contact.recompute_closeness)."""
    contact = ContactFactory(workspace=workspace, **fields)
    Interaction.objects.bulk_create(
        [
            Interaction(
                workspace=workspace,
                contact=contact,
                day=day,
                occurred_at=dt.datetime.combine(day, dt.time(12), tzinfo=dt.timezone.utc),
                last_occurred_at=dt.datetime.combine(day, dt.time(12), tzinfo=dt.timezone.utc),
                description=f"Visited on {day.isoformat()}",
            )
            for day in set(days)
        ]
    )
    if days:
        Contact.recompute_closeness([contact.pk])
        contact.refresh_from_db()
    if contact.first_seen_at is None and days:
        contact.first_seen_at = dt.datetime.combine(min(days), dt.time(12), tzinfo=dt.timezone.utc)
        contact.save(update_fields=["first_seen_at"])
    return contact


def many_contacts(workspace, count, days_of):
    """`count` contacts made in bulk, contact n with interactions on days_of(n), and
    their closeness recomputed: for the "a few hundred rows" query-count tests."""
    contacts = Contact.objects.bulk_create(
        [Contact(workspace=workspace, email=f"bulk{n}@example.com", name=f"Bulk Contact {n}") for n in range(count)]
    )
    if not all(c.pk for c in contacts):  # backends that do not return ids from bulk_create
        contacts = list(Contact.objects.filter(workspace=workspace, email__startswith="bulk").order_by("pk"))
    moment = dt.time(12)
    Interaction.objects.bulk_create(
        [
            Interaction(
                workspace=workspace,
                contact=contact,
                day=day,
                occurred_at=dt.datetime.combine(day, moment, tzinfo=dt.timezone.utc),
                last_occurred_at=dt.datetime.combine(day, moment, tzinfo=dt.timezone.utc),
                description=f"Visited on {day.isoformat()}",
            )
            for n, contact in enumerate(contacts)
            for day in set(days_of(n))
        ],
        batch_size=500,
    )
    Contact.recompute_closeness([c.pk for c in contacts])
    return contacts
