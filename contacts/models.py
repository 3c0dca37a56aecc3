"""Workspaces, their members, contacts and the one-interaction-per-day timeline."""

import datetime as dt
from collections import defaultdict
from zoneinfo import ZoneInfo, available_timezones

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction

from contacts import closeness
from contacts.indexes import LatestFirstIndex


def validate_timezone(value):
    if value not in available_timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone name")


class WorkspaceQuerySet(models.QuerySet):
    def for_user(self, user):
        """The workspaces this user may see: the one place that scopes every page."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(memberships__user=user)


class Workspace(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    # Optional: when set, the webhook requires X-Signature = hex HMAC-SHA1(secret, raw body).
    signing_secret = models.CharField(max_length=200, blank=True, default="")
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="workspaces", blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = WorkspaceQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def tzinfo(self):
        return ZoneInfo(self.timezone)

    def today(self):
        """Today's date in the workspace's time zone: the 'today' of closeness."""
        return dt.datetime.now(self.tzinfo).date()


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "workspace"], name="unique_membership")]

    def __str__(self):
        return f"{self.user} in {self.workspace}"


def level_q(level, today) -> models.Q:
    """The condition "closeness on `today` is `level`" (a range on closeness_log), as a
    Q so it also serves conditional counts and per-time-zone filters."""
    if level == closeness.NONE:
        return models.Q(closeness_log__isnull=True)
    low, high = closeness.log_range(level, today)
    q = models.Q(closeness_log__isnull=False)
    if low is not None:
        q &= models.Q(closeness_log__gte=low)
    if high is not None:
        q &= models.Q(closeness_log__lt=high)
    return q


class ContactQuerySet(models.QuerySet):
    def for_user(self, user):
        return self.filter(workspace__in=Workspace.objects.for_user(user))

    def at_level(self, level, today):
        """Contacts whose closeness on `today` is `level`: a range on closeness_log."""
        return self.filter(level_q(level, today))

    def losing_touch(self, today):
        """Warm or close at their last interaction, cool or colder today, seen within 90 days."""
        cutoff = today - dt.timedelta(days=closeness.LOSING_TOUCH_DAYS)
        return self.filter(
            last_interaction_day__gte=cutoff,
            last_interaction_log_strength__gte=closeness.log2(closeness.WARM_MIN),
            closeness_log__lt=closeness.log_threshold(closeness.WARM_MIN, today),
        )


class Contact(models.Model):
    # Every look-up by workspace leads with the (workspace, ...) indexes below: a plain
    # index on the column would only be one more index to write on every message.
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="contacts", db_index=False)
    email = models.CharField(max_length=254)
    name = models.CharField(max_length=200, blank=True, default="")
    user_id = models.CharField(max_length=255, blank=True, default="")
    traits = models.JSONField(default=dict, blank=True)
    # Per trait key (canonical form), the timestamp of the message that set its value,
    # so that the newest message wins whatever order messages arrive in.
    trait_times = models.JSONField(default=dict, blank=True)
    first_seen_at = models.DateTimeField(null=True, blank=True)
    last_interaction_day = models.DateField(null=True, blank=True)
    # log2(Σ 2 ** (ordinal(d) / H)) over interaction days; see contacts/closeness.py.
    closeness_log = models.FloatField(null=True, blank=True)
    # log2 of S on the last interaction day (closeness_log - ordinal(day) / H): what
    # "was warm or close at their last interaction" is read from.
    last_interaction_log_strength = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ContactQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "email"], name="unique_contact_email")]
        indexes = [
            # DESC NULLS LAST, the order of the contact list (contacts with no interaction
            # last), ties newest contact first: a page is read off the index; level
            # ranges and the dashboard's counts use it too.
            LatestFirstIndex(column="closeness_log", tie_break="id", name="contact_closeness_desc_idx"),
            LatestFirstIndex(column="last_interaction_day", tie_break="id", name="contact_last_day_desc_idx"),
            # A delete request finds the workspace's contacts by userId.
            models.Index(fields=["workspace", "user_id"], name="contact_user_id_idx"),
        ]
        # The search reads ContactSearch, a copy of email and name the database keeps.

    def __str__(self):
        return self.name or self.email

    @classmethod
    def recompute_closeness(cls, contact_ids) -> int:
        """Recompute closeness_log (and the last day) from the interactions; returns how
        many contacts changed. Rows are locked, so concurrent ingest cannot interleave."""
        with transaction.atomic():
            contacts = list(cls.objects.select_for_update().filter(pk__in=contact_ids).order_by("pk"))
            days = defaultdict(list)
            for contact_id, day in Interaction.objects.filter(contact_id__in=contact_ids).values_list(
                "contact_id", "day"
            ):
                days[contact_id].append(day)
            changed = []
            for contact in contacts:
                log = closeness.log_for_days(days[contact.pk])
                last_day = max(days[contact.pk], default=None)
                strength = None if log is None else log - closeness.day_weight_log(last_day)
                current = (contact.closeness_log, contact.last_interaction_day, contact.last_interaction_log_strength)
                if current != (log, last_day, strength):
                    contact.closeness_log, contact.last_interaction_day = log, last_day
                    contact.last_interaction_log_strength = strength
                    changed.append(contact)
            cls.objects.bulk_update(
                changed, ["closeness_log", "last_interaction_day", "last_interaction_log_strength"], batch_size=500
            )
        return len(changed)

    def closeness_on(self, today):
        return closeness.Closeness.from_log(self.closeness_log, today)

    @property
    def closeness(self):
        return self.closeness_on(self.workspace.today())


class ContactSearchQuerySet(models.QuerySet):
    def matching(self, workspace, term):
        """The ids of the workspace's contacts whose email or name holds `term`, ignoring
        case: a subquery for Contact.objects.filter(pk__in=...)."""
        return self.filter(workspace_id=workspace.pk).filter(
            models.Q(email__icontains=term) | models.Q(name__icontains=term)
        ).values("contact_id")


class ContactSearch(models.Model):
    """Each contact's email and name, as the contact list searches them, in a narrow table
    of its own with the search's trigram indexes (PostgreSQL). The database keeps it, by
    triggers on the contacts table (migration contacts/0007): a row is written when a
    contact is inserted, renamed or deleted, whatever writes it (the webhook, an import,
    the admin, a raw statement).

    Why a table apart: a contact's row is rewritten for nearly every message (its traits
    and closeness), never as a HOT update (closeness_log and last_interaction_day are
    indexed for the list's order), so PostgreSQL writes an entry in each of its indexes
    again. On the contacts table the two GIN indexes took some forty trigrams per message
    that way; here they take them when a name or email is new."""

    contact_id = models.BigIntegerField(primary_key=True)
    workspace_id = models.BigIntegerField()
    email = models.CharField(max_length=254)
    name = models.CharField(max_length=200, blank=True, default="")

    objects = ContactSearchQuerySet.as_manager()

    def __str__(self):
        return self.email


class Interaction(models.Model):
    # Denormalized from contact so the dashboard's per-day counts use one index.
    # Led by the (workspace, day) and (contact, day) indexes below; see Contact.workspace.
    # No constraint in the database: the contact's ties each interaction to a contact that
    # exists (and it to its workspace), and checking the one workspace row for every
    # interaction inserted (a lock on it by every writer) cost imports a fifth of their
    # speed. Deleting a workspace still deletes its interactions (Django cascades).
    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="interactions", db_index=False)
    day = models.DateField()
    occurred_at = models.DateTimeField()
    last_occurred_at = models.DateTimeField()
    description = models.CharField(max_length=1000, blank=True, default="")
    url = models.CharField(max_length=2048, blank=True, default="")
    event_count = models.PositiveIntegerField(default=1)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["contact", "day"], name="unique_interaction_day")]
        indexes = [models.Index(fields=["workspace", "day"], name="interaction_workspace_day_idx")]
        ordering = ["-day"]

    def __str__(self):
        return f"{self.contact} on {self.day}"
