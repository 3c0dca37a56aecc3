"""seed_demo: a demo workspace whose dashboard looks alive on the first run.

A few hundred contacts, each following one pattern of a real product's users (daily,
weekly, monthly, churned, brand new, one-off, people you are losing touch with, and
Engage-only profiles that have no interaction), with names, companies and plans, two
Engage audiences and a handful of rejected messages. Everything is dated relative to
today, so the closeness levels are spread out whenever it runs, and every message is
recorded through ingest_messages, the webhook's own write path.

Deterministic for a --seed on a given day; running it again changes nothing (the
messageIds are the same, so every message is a duplicate). --reset rebuilds the demo
for today.
"""

import datetime as dt
import random

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from contacts.models import Contact, Workspace
from ingest.models import ProcessedMessage, RejectedMessage
from ingest.services import excerpt_of, ingest_messages, remember_rejections

CHUNK = 1000
APP = "https://app.orbitnotes.io"
FIRST_NAMES = (
    "Ada Amara Ben Camille Chidi Chloe Dario Elena Emeka Farah Felix Grace Hana Hugo Ines Ivan Jamal Jana "
    "Jonas Julia Kai Kenji Lars Leila Lena Liam Lucia Malik Maya Mateo Mei Mila Nadia Niko Noah Nora Omar "
    "Oscar Priya Rafael Rosa Sam Sara Sofia Tariq Theo Uma Vera Wei Yara Yusuf Zoe"
).split()
LAST_NAMES = (
    "Abebe Alvarez Andersen Bauer Becker Bianchi Costa Dubois Dimitrov Eriksen Fischer Garcia Haddad Hoffmann "
    "Ibrahim Ito Jensen Kowalski Kim Larsen Laurent Lindqvist Martin Meyer Moreau Nakamura Novak Okafor "
    "Oliveira Petrov Popescu Quinn Rossi Santos Schmidt Silva Suzuki Tanaka Varga Weber Wright Yilmaz Zhang"
).split()
COMPANIES = (
    ("Initech", "initech.com"), ("Hooli", "hooli.xyz"), ("Vandelay Industries", "vandelay.com"),
    ("Northwind Traders", "northwind.io"), ("Bluth Company", "bluth.co"), ("Stark Logistics", "starklogistics.com"),
    ("Pied Piper", "piedpiper.com"), ("Soylent Labs", "soylentlabs.io"), ("Wayfarer Health", "wayfarer.health"),
    ("Kestrel Robotics", "kestrel.ai"), ("Lumen Grid", "lumengrid.energy"), ("Copperleaf Finance", "copperleaf.fi"),
    ("Tidewater Analytics", "tidewater.dev"), ("Fernhill Studio", "fernhill.design"), ("Quarry Systems", "quarry.systems"),
    ("Mosaic Learning", "mosaiclearning.org"), ("Brightline Freight", "brightline.co"), ("Halcyon Bio", "halcyonbio.com"),
    ("Ridgeway Legal", "ridgeway.law"), ("Saltmarsh Foods", "saltmarsh.shop"), ("Parallax Games", "parallax.gg"),
    ("Orchard CRM", "orchardcrm.com"), ("Granite Security", "granitesec.io"), ("Juniper Travel", "junipertravel.com"),
)
TITLES = (
    "Founder", "CEO", "CTO", "Head of Growth", "Product Manager", "Engineering Manager", "Data Analyst",
    "Marketing Lead", "Operations Manager", "Designer", "Software Engineer", "Customer Success Lead",
)
PLANS = ("free", "starter", "pro", "team", "enterprise")
PAGES = (
    "/dashboard", "/notes", "/notes/new", "/projects", "/reports/weekly", "/search?q=roadmap",
    "/settings/billing", "/settings/team", "/integrations/segment", "/pricing", "/docs/getting-started",
)
EVENTS = (
    "Signed in", "Created a note", "Shared a project", "Invited a teammate", "Exported a report",
    "Connected an integration", "Upgraded plan", "Commented on a note",
)
AUDIENCES = {
    # computation_key: who Engage puts in it
    "power_users": "daily",
    "at_risk_accounts": "losing_touch",
    "newsletter_subscribers": "profile_only",
}
# (pattern, how many contacts): the cast of the demo, in a fixed order.
PATTERNS = (
    ("daily", 30),
    ("weekly", 55),
    ("monthly", 45),
    ("losing_touch", 25),
    ("churned", 45),
    ("brand_new", 30),
    ("one_off", 45),
    ("profile_only", 15),
)


def active_days(pattern, rng):
    """How many days ago each interaction of a contact of this pattern happened."""
    if pattern == "daily":  # most days for weeks or months, up to today
        span = rng.randint(15, 40)
        return [k for k in range(span) if k < 2 or rng.random() < 0.8]
    if pattern == "weekly":  # about one day a week
        start, weeks = rng.randint(0, 4), rng.randint(6, 16)
        return sorted({max(0, start + 7 * w + rng.randint(-1, 1)) for w in range(weeks) if rng.random() < 0.9})
    if pattern == "monthly":
        start, months = rng.randint(0, 29), rng.randint(3, 8)
        return [start + 30 * m + rng.randint(-2, 2) for m in range(months) if start + 30 * m >= 2]
    if pattern == "losing_touch":  # busy for weeks, then silent for 5 to 12 weeks
        gap, span = rng.randint(36, 84), rng.randint(14, 30)
        return [gap + k for k in range(span) if k == 0 or rng.random() < 0.7]
    if pattern == "churned":  # used to be regulars, gone for over three months
        gap, span = rng.randint(100, 330), rng.randint(30, 90)
        return sorted({gap + k for k in range(0, span, rng.choice((2, 4, 7))) if rng.random() < 0.8})
    if pattern == "brand_new":  # signed up in the last week
        first = rng.randint(0, 6)
        return [k for k in range(first + 1) if k == first or rng.random() < 0.6]
    if pattern == "one_off":
        return [rng.choice((rng.randint(0, 20), rng.randint(21, 365)))]
    return []  # profile_only: known to Engage, never seen in the product


class Cast:
    """Makes the people: unique, plausible names and work addresses."""

    def __init__(self, rng):
        self.rng = rng
        self.emails = set()

    def person(self, pattern):
        rng = self.rng
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        company, domain = rng.choice(COMPANIES)
        local = rng.choice((f"{first}.{last}", f"{first}", f"{first[0]}{last}", f"{first}{last[0]}")).lower()
        email, n = f"{local}@{domain}", 1
        while email in self.emails:
            n += 1
            email = f"{local}{n}@{domain}"
        self.emails.add(email)
        plan = rng.choice(PLANS[:2]) if pattern in ("brand_new", "one_off", "profile_only") else rng.choice(PLANS)
        return {
            "pattern": pattern,
            "email": email,
            "user_id": f"usr_{rng.getrandbits(40):010x}",
            "traits": {
                "firstName": first,
                "lastName": last,
                "email": email,
                "company": company,
                "title": rng.choice(TITLES),
                "plan": plan,
            },
            # Some libraries send snake_case traits: natsite treats them as the same trait.
            "snake_case": rng.random() < 0.2,
        }


def snake(traits):
    names = {"firstName": "first_name", "lastName": "last_name"}
    return {names.get(key, key): value for key, value in traits.items()}


class Command(BaseCommand):
    help = "Create the demo workspace with a few hundred realistic contacts (running it again changes nothing)."

    def add_arguments(self, parser):
        parser.add_argument("--seed", type=int, default=42, help="the same seed on the same day gives the same demo")
        parser.add_argument("--workspace", default="demo", help="slug of the workspace to fill (default demo)")
        parser.add_argument("--name", default="Demo", help="its name, when it is created (default Demo)")
        parser.add_argument("--reset", action="store_true", help="delete the workspace's contacts first, to rebuild it for today")

    def handle(self, *args, seed, workspace, name, reset, **options):
        target, _ = Workspace.objects.get_or_create(slug=workspace, defaults={"name": name})
        if reset:
            with transaction.atomic():
                Contact.objects.filter(workspace=target).delete()
                ProcessedMessage.objects.filter(workspace=target).delete()
                RejectedMessage.objects.filter(workspace=target).delete()
        now = timezone.now()
        messages, rejects = demo_messages(seed=seed, today=now.astimezone(target.tzinfo).date(), now=now, tz=target.tzinfo)

        statuses = {}
        for start in range(0, len(messages), CHUNK):
            for result in ingest_messages(workspace=target, raw_messages=messages[start : start + CHUNK], now=now):
                statuses[result.status] = statuses.get(result.status, 0) + 1
        self.remember_new_rejections(target, rejects, now)

        counts = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
        contacts = Contact.objects.filter(workspace=target).count()
        self.stdout.write(f"Demo workspace {target.slug!r}: {contacts} contacts; {len(messages)} messages ({counts}).")

    def remember_new_rejections(self, workspace, rejects, now):
        """Record the demo's rejected messages the way the webhook does, once: those
        already listed (same excerpt) are not added again."""
        results = ingest_messages(workspace=workspace, raw_messages=rejects, now=now)
        listed = set(RejectedMessage.objects.filter(workspace=workspace).values_list("excerpt", flat=True))
        remember_rejections(
            workspace=workspace,
            rejected=[
                (result, raw)
                for result, raw in zip(results, rejects)
                if not result.accepted and excerpt_of(raw) not in listed
            ],
        )


def demo_messages(*, seed, today, now, tz):
    """(messages to record, messages the webhook rejects), all dated relative to today."""
    rng = random.Random(seed)
    cast = Cast(rng)
    latest = now - dt.timedelta(minutes=1)
    messages = []

    def moment(days_ago):
        day = today - dt.timedelta(days=days_ago)
        at = dt.datetime.combine(day, dt.time(rng.randint(8, 19), rng.randint(0, 59), rng.randint(0, 59)), tzinfo=tz)
        at += dt.timedelta(milliseconds=rng.randint(0, 999))
        return min(at, latest)  # today's activity has already happened

    people = [cast.person(pattern) for pattern, count in PATTERNS for _ in range(count)]
    for index, person in enumerate(people):
        traits = snake(person["traits"]) if person["snake_case"] else person["traits"]
        days = sorted(active_days(person["pattern"], rng), reverse=True)  # oldest first
        for number, days_ago in enumerate(days):
            for event in range(1 if rng.random() < 0.75 else rng.randint(2, 3)):
                message_id = f"demo-{seed}-{index}-{(today - dt.timedelta(days=days_ago)).isoformat()}-{event}"
                # The first message carries the whole profile; later ones mostly the email.
                sent = traits if number == 0 and event == 0 else {"email": person["email"]}
                if number > 0 and person["pattern"] in ("daily", "weekly") and rng.random() < 0.03:
                    sent = {**sent, "plan": rng.choice(PLANS[2:])}  # an upgrade: the newest plan wins
                messages.append(identify(rng, message_id, moment(days_ago), person, sent))
    messages.extend(audience_syncs(seed, people, now))
    return messages, rejected_examples(seed, today, tz)


def identify(rng, message_id, at, person, traits):
    """One identify, in one of the shapes Segment sends (PRODUCT.md §2)."""
    timestamp = at.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    url = APP + rng.choice(PAGES)
    shape = rng.random()
    if shape < 0.5:  # the recommended format: traits and page
        return {"type": "identify", "messageId": message_id, "timestamp": timestamp,
                "userId": person["user_id"], "traits": traits, "page": {"url": url}}
    if shape < 0.8:  # what analytics.js sends
        return {"type": "identify", "messageId": message_id, "timestamp": timestamp, "userId": person["user_id"],
                "traits": traits, "context": {"page": {"url": url, "path": url[len(APP):]},
                                              "library": {"name": "analytics.js", "version": "next-1.70.0"}}}
    # the event name replaces the url
    return {"type": "identify", "messageId": message_id, "timestamp": timestamp,
            "email": person["email"], "event": rng.choice(EVENTS), "traits": traits}


def audience_syncs(seed, people, now):
    """Engage audience syncs: traits only, no interaction (so closeness is untouched)."""
    synced_at = (now - dt.timedelta(hours=3)).astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")
    syncs = []
    for index, person in enumerate(people):
        for key, pattern in AUDIENCES.items():
            if person["pattern"] != pattern:
                continue
            traits = {"email": person["email"], key: True}
            if pattern == "profile_only":
                traits.update(person["traits"])
            syncs.append({
                "type": "identify",
                "messageId": f"personas-demo-{seed}-{key}-{index}",
                "timestamp": synced_at.replace("+00:00", "Z"),
                "userId": person["user_id"],
                "context": {"personas": {"computation_class": "audience", "computation_key": key,
                                         "computation_id": f"aud_{key}", "space_id": "spa_demo"}},
                "traits": traits,
            })
    return syncs


def rejected_examples(seed, today, tz):
    """Messages a real Segment source sends that the webhook turns away, with why."""
    yesterday = dt.datetime.combine(today - dt.timedelta(days=1), dt.time(15, 4, 5), tzinfo=tz)
    stamp = yesterday.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    return [
        {"type": "identify", "messageId": f"demo-{seed}-rejected-1", "timestamp": stamp,
         "userId": "usr_guest_1043", "traits": {"plan": "free"}},
        {"type": "track", "messageId": f"demo-{seed}-rejected-2", "timestamp": stamp,
         "userId": "usr_guest_1043", "event": "Order Completed", "properties": {"total": 42}},
        {"type": "page", "messageId": f"demo-{seed}-rejected-3", "timestamp": stamp,
         "anonymousId": "anon-5be2", "name": "Pricing"},
        {"type": "identify", "messageId": f"demo-{seed}-rejected-4", "timestamp": "last tuesday",
         "traits": {"email": "dana@initech.com"}},
        {"type": "identify", "messageId": f"demo-{seed}-rejected-5", "traits": {"email": "dana@initech.com"}},
        {"type": "identify", "messageId": f"demo-{seed}-rejected-6", "timestamp": stamp,
         "traits": {"email": "dana(at)initech.com"}},
    ]
