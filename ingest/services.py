"""The one write path: every Segment message, from the webhook, a batch or
import_events, is recorded by record_message() (PRODUCT.md §2, §3).

Per message, in one transaction:
1. claim the messageId in ProcessedMessage (INSERT ... ON CONFLICT DO NOTHING): a
   message already processed changes nothing;
2. upsert the contact (INSERT ... ON CONFLICT DO UPDATE), which also locks its row,
   so concurrent messages for one contact are applied one after another;
3. merge into the day's interaction, or create it (the contact lock makes the
   "update, else insert" pair race-free);
4. write the contact's merged traits, first_seen_at, last day and closeness_log.
"""

import datetime as dt
import json
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from contacts import closeness
from contacts.models import Contact, Interaction, Workspace
from ingest.models import ProcessedMessage, RejectedMessage
from ingest.serializers import MessageRejected, SegmentMessage, fold, normalize

# trait_times' entry for userId; fold() never yields a leading space, so no trait clashes.
USER_ID_TIME = " user_id"
ACCEPTED = ("created", "merged", "duplicate", "traits_updated", "deleted")


@dataclass
class Result:
    status: str  # one of ACCEPTED, or "rejected"
    code: int = 200
    message: str = ""
    email: str = ""
    day: dt.date | None = None
    deleted: int | None = None

    @property
    def accepted(self) -> bool:
        return self.status != "rejected"

    def to_dict(self) -> dict:
        if not self.accepted:
            return {"status": self.code, "code": self.code, "message": self.message}
        out = {"status": self.status, "code": self.code}
        if self.email:
            out["email"] = self.email
        if self.day is not None:
            out["day"] = self.day.isoformat()
        if self.deleted is not None:
            out["deleted"] = self.deleted
        return out


def timestamp_key(moment: dt.datetime) -> str:
    """A UTC timestamp as a string that sorts like the moment it names."""
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_order(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def merge_traits(traits: dict, trait_times: dict, incoming: dict, moment: dt.datetime) -> bool:
    """Merge `incoming` in place: per key, the newest message wins (ties: the larger
    value, so the outcome never depends on arrival order). Returns whether anything changed."""
    stamp = timestamp_key(moment)
    spelled = {fold(key): key for key in traits}
    changed = False
    for key, value in incoming.items():
        folded = fold(key)
        current_key = spelled.get(folded)
        previous = trait_times.get(folded)
        if current_key is not None and previous is not None:
            if stamp < previous:
                continue
            if stamp == previous and _json_order(value) <= _json_order(traits[current_key]):
                continue
        if current_key is not None and current_key != key:
            del traits[current_key]
        traits[key] = value
        trait_times[folded] = stamp
        spelled[folded] = key
        changed = True
    return changed


def name_from_traits(traits: dict) -> str:
    by_fold = {fold(key): value for key, value in traits.items()}
    name = by_fold.get("name")
    if isinstance(name, str) and name.strip():
        return name.strip()[:200]
    parts = [by_fold.get("firstname"), by_fold.get("lastname")]
    return " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())[:200]


_UPSERT_CONTACT = """
INSERT INTO {table} (workspace_id, email, name, user_id, traits, trait_times, first_seen_at, created_at)
VALUES (%s, %s, '', %s, '{{}}', '{{}}', %s, %s)
ON CONFLICT (workspace_id, email) DO UPDATE SET email = excluded.email
RETURNING *
"""


def _lock_contact(workspace: Workspace, email: str, user_id: str, moment: dt.datetime) -> Contact:
    """Create the contact if new, and lock its row for the rest of the transaction."""
    adapt = connection.ops.adapt_datetimefield_value
    sql = _UPSERT_CONTACT.format(table=connection.ops.quote_name(Contact._meta.db_table))
    params = [workspace.pk, email, user_id, adapt(moment), adapt(timezone.now())]
    return next(iter(Contact.objects.raw(sql, params)))


def _claim_message_id(workspace: Workspace, message_id: str) -> bool:
    """True when this messageId is new to the workspace (and is now recorded)."""
    table = connection.ops.quote_name(ProcessedMessage._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (workspace_id, message_id, received_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (workspace_id, message_id) DO NOTHING RETURNING id",
            [workspace.pk, message_id, connection.ops.adapt_datetimefield_value(timezone.now())],
        )
        return cursor.fetchone() is not None


def _merge_interaction(contact: Contact, message: SegmentMessage, day: dt.date) -> bool:
    """Add the message to the contact's interaction of `day`; True if it created it."""
    moment = message.timestamp
    # The earliest message of the day defines occurred_at, description and url; on a
    # tie the smaller description wins, so arrival order never matters.
    defines = Q(occurred_at__gt=moment) | Q(occurred_at=moment, description__gt=message.description)
    updated = Interaction.objects.filter(contact=contact, day=day).update(
        event_count=F("event_count") + 1,
        description=Case(When(defines, then=Value(message.description)), default=F("description")),
        url=Case(When(defines, then=Value(message.url)), default=F("url")),
        occurred_at=Case(When(occurred_at__gt=moment, then=Value(moment)), default=F("occurred_at")),
        last_occurred_at=Case(
            When(last_occurred_at__lt=moment, then=Value(moment)), default=F("last_occurred_at")
        ),
    )
    if updated:
        return False
    Interaction.objects.create(
        workspace_id=contact.workspace_id,
        contact=contact,
        day=day,
        occurred_at=moment,
        last_occurred_at=moment,
        description=message.description,
        url=message.url,
        event_count=1,
    )
    return True


def record_identify(*, workspace: Workspace, message: SegmentMessage) -> Result:
    """Apply one identify (already claimed) inside the caller's transaction."""
    moment = message.timestamp
    day = moment.astimezone(workspace.tzinfo).date()
    contact = _lock_contact(workspace, message.email, message.user_id, moment)
    changes = {}

    traits, trait_times = dict(contact.traits), dict(contact.trait_times)
    if message.user_id:
        # userId is ordered like a trait: the newest message's userId is kept.
        stamp, previous = timestamp_key(moment), trait_times.get(USER_ID_TIME)
        if previous is None or stamp > previous or (stamp == previous and message.user_id > contact.user_id):
            trait_times[USER_ID_TIME] = stamp
            if message.user_id != contact.user_id:
                changes["user_id"] = message.user_id
    incoming = message.traits
    if merge_traits(traits, trait_times, incoming, moment):
        changes["traits"] = traits
        name = name_from_traits(traits)
        if name != contact.name:
            changes["name"] = name
    if trait_times != contact.trait_times:
        changes["trait_times"] = trait_times
    if contact.first_seen_at is None or moment < contact.first_seen_at:
        changes["first_seen_at"] = moment

    if message.is_engage:
        status = "traits_updated"
    elif _merge_interaction(contact, message, day):
        status = "created"
        log = closeness.add_day(contact.closeness_log, day)
        last_day = max(day, contact.last_interaction_day or day)
        changes.update(
            closeness_log=log,
            last_interaction_day=last_day,
            last_interaction_log_strength=log - closeness.day_weight_log(last_day),
        )
    else:
        status = "merged"

    if changes:
        Contact.objects.filter(pk=contact.pk).update(**changes)
    return Result(status=status, email=message.email, day=None if message.is_engage else day)


def record_delete(*, workspace: Workspace, message: SegmentMessage) -> Result:
    """Segment's user-deletion request: the user's contacts go, with their interactions."""
    match = Q(pk__in=[])
    if message.user_id:
        match |= Q(user_id=message.user_id)
    if message.email:
        match |= Q(email=message.email)
    _, per_model = Contact.objects.filter(workspace=workspace).filter(match).delete()
    count = per_model.get(Contact._meta.label, 0)
    return Result(status="deleted", email=message.email, deleted=count)


def record_message(*, workspace: Workspace, message: SegmentMessage) -> Result:
    """Record one normalized message, exactly once per messageId, in its own transaction."""
    with transaction.atomic():
        if not _claim_message_id(workspace, message.message_id):
            day = message.timestamp.astimezone(workspace.tzinfo).date() if message.timestamp else None
            return Result(status="duplicate", email=message.email, day=day)
        if message.type == "delete":
            return record_delete(workspace=workspace, message=message)
        return record_identify(workspace=workspace, message=message)


def ingest_messages(*, workspace: Workspace, raw_messages, now=None) -> list[Result]:
    """Validate and record a list of decoded JSON messages; one bad message never
    loses the good ones. Database errors propagate (the webhook answers 503)."""
    now = now or timezone.now()
    results = []
    for raw in raw_messages:
        try:
            message = normalize(raw, now=now)
        except MessageRejected as rejected:
            results.append(Result(status="rejected", code=rejected.status, message=rejected.message))
            continue
        results.append(record_message(workspace=workspace, message=message))
    return results


def excerpt_of(raw, limit=300) -> str:
    try:
        # A body that could not be parsed is shown as the text it is.
        text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        text = repr(raw)
    # Lone surrogates (from "\ud800" escapes) cannot be encoded for the database.
    text = text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def remember_rejections(*, workspace: Workspace, rejected: list[tuple[Result, object]]) -> None:
    """Keep the workspace's last REJECTED_MESSAGES_KEPT rejections (when, status, why, excerpt)."""
    if not rejected:
        return
    keep = settings.REJECTED_MESSAGES_KEPT
    now = timezone.now()
    rows = [
        RejectedMessage(
            workspace=workspace, received_at=now, status=r.code, message=r.message[:500], excerpt=excerpt_of(raw)
        )
        for r, raw in rejected[-keep:]
    ]
    with transaction.atomic():
        RejectedMessage.objects.bulk_create(rows)
        newest = RejectedMessage.objects.filter(workspace=workspace).order_by("-id")
        first_dropped = newest.values_list("id", flat=True)[keep:keep + 1].first()
        if first_dropped is not None:
            RejectedMessage.objects.filter(workspace=workspace, id__lte=first_dropped).delete()
