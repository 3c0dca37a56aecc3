"""No workspace ever sees or changes another's data, through ANY URL of the app.

Every URL pattern is enumerated from the resolver (the app's pages, the settings page and
its POSTs, the CSV export, the webhook, and every admin URL of every registered model)
and must be classified in ROUTES below; a new URL that is not classified fails
`test_every_url_is_classified`, so a new page cannot escape this walk.

The walk: workspace "acme" (alice's) is filled with distinctive contacts, interactions,
traits, keys, key events, rejected and processed messages, admin history. charlie —
member and staff of "globex", not a superuser, allowed to rotate keys — then visits
every URL, with acme's object ids wherever a URL takes one, with ?workspace=acme, with
acme's strings as searches and filters, and POSTs to every acme object. No response
(nor any redirect it leads to) may contain any of acme's distinctive strings, and every
acme row must be exactly as before. The same walk runs again with charlie holding every
permission of the contacts and ingest apps: membership, not permissions, is the wall.
Anonymous visitors are sent to a login page from every page and every POST.
"""

import base64
import datetime as dt
import json
import re
from dataclasses import dataclass, field
from urllib.parse import urlencode

import pytest
from django.contrib import admin
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db.models import JSONField
from django.forms.models import model_to_dict
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from contacts.models import Contact, Interaction, Membership, Workspace
from ingest.api_keys import create_api_key, rotate_api_key
from ingest.models import ApiKey, ApiKeyEvent, ProcessedMessage, RejectedMessage
from tests.factories import ContactFactory, InteractionFactory

pytestmark = pytest.mark.django_db

PASSWORD = "charlie's long passphrase"
ACME_SLUG = "acme-anvilworks"
ACME_EMAIL = "wile.coyote@acme-anvilworks.test"
ACME_USER_ID = "acme-uid-7731"

# Strings that exist only in acme's rows; found in a response to charlie, they are a leak.
ACME_TOKENS = [
    "Acme Anvilworks",
    ACME_SLUG,
    ACME_EMAIL,
    "road.runner@acme-anvilworks.test",
    "Wile Ethelbert Coyote",
    "Beep Runnerson",
    ACME_USER_ID,
    "acme-plan-rocket-skates",
    "acme_trait_secret_key",
    "acme-audience-giant-magnet",
    "https://acme-anvilworks.test/catalog/giant-magnet",
    "acme event anvil ordered",
    "acme-rejection-marker",
    "acme-excerpt-marker",
    "acme-key-event-marker",
    "acme-history-marker",
    "acme-group-marker",
    "acme-message-id-1",
    "acme-signing-secret-marker-0123456789",
    "alice@example.com",
]
# Words matched whole: alice's user name (she created acme's keys).
ACME_WORDS = ["alice"]
# Never shown to anyone, alice included (secrets); still scanned for.
NEVER_SHOWN = {"acme-signing-secret-marker-0123456789", "acme-message-id-1"}

GLOBEX_EMAIL = "hank.scorpio@globex.test"


# --- the two workspaces --------------------------------------------------------------


@dataclass
class Acme:
    workspace: Workspace
    alice: object
    contact: Contact
    other_contact: Contact
    interaction: Interaction
    key: ApiKey
    raw_keys: list
    event: ApiKeyEvent
    rejected: RejectedMessage
    membership: Membership
    group: Group
    tokens: list = field(default_factory=list)

    def objects(self):
        """One acme object per model, for every URL that takes an object id."""
        return {
            Workspace: self.workspace,
            Membership: self.membership,
            Contact: self.contact,
            Interaction: self.interaction,
            ApiKey: self.key,
            ApiKeyEvent: self.event,
            get_user_model(): self.alice,
            Group: self.group,
        }


@dataclass
class Globex:
    workspace: Workspace
    charlie: object
    contact: Contact
    interaction: Interaction
    key: ApiKey
    raw_key: str
    event: ApiKeyEvent
    membership: Membership

    def objects(self):
        return {
            Workspace: self.workspace,
            Membership: self.membership,
            Contact: self.contact,
            Interaction: self.interaction,
            ApiKey: self.key,
            ApiKeyEvent: self.event,
        }


@pytest.fixture
def acme(workspace, alice):
    workspace.name, workspace.slug = "Acme Anvilworks", ACME_SLUG
    workspace.signing_secret = "acme-signing-secret-marker-0123456789"
    workspace.save()
    alice.is_staff = True
    alice.save()
    today = timezone.now().date()
    contact = ContactFactory(
        workspace=workspace,
        email=ACME_EMAIL,
        name="Wile Ethelbert Coyote",
        user_id=ACME_USER_ID,
        traits={
            "plan": "acme-plan-rocket-skates",
            "acme_trait_secret_key": "yes",
            "acme-audience-giant-magnet": True,
        },
        first_seen_at=timezone.now() - dt.timedelta(days=40),
    )
    interaction = None
    for days_ago, description in [
        (0, "https://acme-anvilworks.test/catalog/giant-magnet"),
        (2, "acme event anvil ordered"),
        (9, "acme event anvil ordered"),
    ]:
        made = InteractionFactory(
            contact=contact,
            day=today - dt.timedelta(days=days_ago),
            description=description,
            url=description if description.startswith("https://") else "",
            event_count=3,
        )
        interaction = interaction or made
    Contact.recompute_closeness([contact.pk])
    other = ContactFactory(workspace=workspace, email="road.runner@acme-anvilworks.test", name="Beep Runnerson")
    InteractionFactory(contact=other, day=today - dt.timedelta(days=30), description="acme event anvil ordered")
    Contact.recompute_closeness([other.pk])
    key, raw = create_api_key(workspace=workspace, actor=alice)
    newer, newer_raw = rotate_api_key(workspace=workspace, actor=alice, grace="7d")
    event = ApiKeyEvent.objects.create(
        workspace=workspace, api_key=key, action=ApiKeyEvent.REVOKED, prefix=key.prefix, actor=alice,
        detail="acme-key-event-marker",
    )
    rejected = RejectedMessage.objects.create(
        workspace=workspace, status=400, message="Invalid email address acme-rejection-marker",
        excerpt='{"traits": {"email": "acme-excerpt-marker"}}',
    )
    ProcessedMessage.objects.create(workspace=workspace, message_id="acme-message-id-1")
    group = Group.objects.create(name="acme-group-marker")
    alice.groups.add(group)
    LogEntry.objects.create(
        user=alice,
        content_type=ContentType.objects.get_for_model(Contact),
        object_id=str(contact.pk),
        object_repr=contact.name,
        action_flag=CHANGE,
        change_message="acme-history-marker",
    )
    prefixes = [key.prefix, newer.prefix]
    return Acme(
        workspace=workspace,
        alice=alice,
        contact=contact,
        other_contact=other,
        interaction=interaction,
        key=key,
        raw_keys=[raw, newer_raw],
        event=event,
        rejected=rejected,
        membership=Membership.objects.get(workspace=workspace, user=alice),
        group=group,
        tokens=ACME_TOKENS + prefixes + [raw, newer_raw, key.key_hash, newer.key_hash],
    )


@pytest.fixture
def globex(other_workspace, charlie, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    charlie.is_staff = True
    charlie.set_password(PASSWORD)
    charlie.save()
    contact = ContactFactory(workspace=other_workspace, email=GLOBEX_EMAIL, name="Hank Scorpio",
                             user_id="globex-uid-1", traits={"plan": "globex-plan"})
    interaction = InteractionFactory(contact=contact, description="globex visit")
    Contact.recompute_closeness([contact.pk])
    key, raw = create_api_key(workspace=other_workspace, actor=charlie)
    RejectedMessage.objects.create(workspace=other_workspace, status=400, message="Missing email", excerpt="{}")
    return Globex(
        workspace=other_workspace,
        charlie=charlie,
        contact=contact,
        interaction=interaction,
        key=key,
        raw_key=raw,
        event=ApiKeyEvent.objects.filter(workspace=other_workspace).first(),
        membership=Membership.objects.get(workspace=other_workspace, user=charlie),
    )


def grant_every_app_permission(user):
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label__in=["contacts", "ingest"]))


def acme_rows(acme):
    """Every row that belongs to acme (or to alice), to compare before and after the walk."""
    ws = acme.workspace
    User = get_user_model()
    return {
        "workspace": list(Workspace.objects.filter(pk=ws.pk).values()),
        "memberships": list(Membership.objects.filter(workspace=ws).order_by("pk").values()),
        "contacts": list(Contact.objects.filter(workspace=ws).order_by("pk").values()),
        "interactions": list(Interaction.objects.filter(workspace=ws).order_by("pk").values()),
        "interactions by contact": list(
            Interaction.objects.filter(contact__workspace=ws).order_by("pk").values_list("pk", flat=True)
        ),
        "api keys": list(ApiKey.objects.filter(workspace=ws).order_by("pk").values()),
        "key events": list(ApiKeyEvent.objects.filter(workspace=ws).order_by("pk").values()),
        "processed": list(ProcessedMessage.objects.filter(workspace=ws).order_by("pk").values()),
        "rejected": list(RejectedMessage.objects.filter(workspace=ws).order_by("pk").values()),
        "alice": list(User.objects.filter(pk=acme.alice.pk).values(
            "username", "email", "password", "is_staff", "is_superuser", "is_active")),
        "alice's groups": list(acme.alice.groups.values_list("pk", flat=True)),
        "acme group": list(Group.objects.filter(pk=acme.group.pk).values()),
        "members of acme": sorted(ws.members.values_list("pk", flat=True)),
    }


# --- enumerating the URLs ------------------------------------------------------------


def all_routes(patterns=None, prefix=""):
    """Every URL pattern of the project, as its full route text."""
    patterns = get_resolver().url_patterns if patterns is None else patterns
    routes = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            routes += all_routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            routes.append(prefix + str(pattern.pattern))
    return routes


def admin_model_routes():
    """route -> (kind, model) for every URL of every registered ModelAdmin."""
    routes = {}
    for model in admin.site._registry:
        base = f"admin/{model._meta.app_label}/{model._meta.model_name}/"
        for suffix, kind in ADMIN_MODEL_SUFFIXES.items():
            routes[base + suffix] = (kind, model)
    return routes


ADMIN_MODEL_SUFFIXES = {
    "": "changelist",
    "add/": "add",
    "<path:object_id>/history/": "history",
    "<path:object_id>/delete/": "delete",
    "<path:object_id>/change/": "change",
    "<path:object_id>/": "object",
}
# Per-model extra URLs of Django's own admins.
ADMIN_EXTRA_MODEL_ROUTES = {"admin/auth/user/<id>/password/": ("user password", get_user_model())}


# --- the walk ------------------------------------------------------------------------


def body_of(response) -> str:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode("utf-8", "replace")
    return response.content.decode("utf-8", "replace")


class Walk:
    """charlie's visit, collecting every problem instead of stopping at the first."""

    def __init__(self, acme, globex, client):
        self.acme, self.globex, self.client = acme, globex, client
        self.problems = []
        self.requests = 0
        self.tokens = [t.lower() for t in acme.tokens]
        self.words = [re.compile(rf"\b{re.escape(w)}\b", re.I) for w in ACME_WORDS]

    def leaks(self, text: str, sent: str = "") -> list:
        """acme's strings in text, except those the visitor typed in the request itself
        (a search box showing back its own query is not a leak)."""
        lowered, sent = text.lower(), sent.lower()
        found = [t for t in self.tokens if t in lowered and t not in sent]
        return found + [w.pattern for w in self.words if w.search(text) and not w.search(sent)]

    def scan(self, label, response, sent=""):
        self.requests += 1
        texts = [body_of(response)]
        texts += [f"{name}: {value}" for name, value in response.items()]
        texts += [hop[0] for hop in getattr(response, "redirect_chain", [])]
        found = self.leaks("\n".join(texts), sent)
        if found:
            self.problems.append(f"{label} -> {response.status_code} shows acme data: {found}")
        return response

    def check(self, label, url, response, expect):
        if expect == REFUSED_OR_REDIRECTED_AWAY:
            # The admin answers an object outside the user's scope with a redirect to its
            # index (and a message); 403/404 are refusals too. Never the object's own page.
            final = response.request["PATH_INFO"]
            refused = response.status_code in (403, 404) or (response.redirect_chain and final == "/admin/")
            if not refused:
                self.problems.append(f"{label}: {url} -> {response.status_code} at {final}, expected a refusal")
        elif expect is not None and response.status_code not in expect:
            self.problems.append(f"{label}: {url} -> {response.status_code}, expected one of {expect}")

    def get(self, label, path, query=None, *, expect=None):
        url = path + ("?" + urlencode(query, doseq=True) if query else "")
        response = self.client.get(url, follow=True)
        self.scan(f"GET {url} ({label})", response, sent=f"{url} {query}")
        self.check(f"GET ({label})", url, response, expect)
        return response

    def post(self, label, path, data, *, expect=None, **extra):
        response = self.client.post(path, data, follow=True, **extra)
        self.scan(f"POST {path} ({label})", response, sent=f"{path} {data}")
        self.check(f"POST ({label})", path, response, expect)
        return response


REFUSED = (403, 404)
ADMIN_REFUSED = REFUSED_OR_REDIRECTED_AWAY = "refused or redirected away"


def admin_object_url(model, obj, suffix):
    return f"/admin/{model._meta.app_label}/{model._meta.model_name}/{obj.pk}/{suffix}"


def form_data(obj, **overrides):
    """A plausible admin form submission for obj (JSON as text, None as empty)."""
    data = {}
    for name, value in model_to_dict(obj).items():
        model_field = obj._meta.get_field(name)
        if isinstance(model_field, JSONField):
            value = json.dumps(value)
        elif value is None:
            value = ""
        elif isinstance(value, list):
            value = [getattr(v, "pk", v) for v in value]
        data[name] = value
    data.update(overrides)
    return data


def probe_public(walk, route):
    path = "/" + route.replace("^", "").replace("$", "")
    walk.get("public page", path, expect=(200,))


def probe_app_page(walk, route, queries=()):
    path = "/" + route
    walk.get("own workspace", path, expect=(200,))
    walk.get("acme named", path, {"workspace": ACME_SLUG}, expect=REFUSED)
    walk.get("acme by id", path, {"workspace": walk.acme.workspace.pk}, expect=(200, 404))
    for query in queries:
        walk.get("search/filter", path, query, expect=(200,))


def probe_app_contact(walk, route):
    walk.get("acme contact", f"/contacts/{walk.acme.contact.pk}/", expect=REFUSED)
    walk.get("acme contact, acme named", f"/contacts/{walk.acme.contact.pk}/", {"workspace": ACME_SLUG}, expect=REFUSED)
    walk.get("acme contact, paged", f"/contacts/{walk.acme.contact.pk}/", {"page": 2}, expect=REFUSED)
    walk.get("own contact", f"/contacts/{walk.globex.contact.pk}/", expect=(200,))


def probe_rotate(walk, route):
    for slug in (ACME_SLUG, str(walk.acme.workspace.pk)):
        walk.post("rotate acme's key", "/" + route, {"workspace": slug, "grace": "now", "password": PASSWORD},
                  expect=REFUSED)
    walk.post("rotate own key", "/" + route, {"workspace": "globex", "grace": "1h", "password": PASSWORD},
              expect=(200,))


def probe_revoke(walk, route):
    for key in ApiKey.objects.filter(workspace=walk.acme.workspace):
        walk.post("revoke acme's key", f"/settings/api-keys/{key.pk}/revoke/",
                  {"workspace": "globex", "password": PASSWORD}, expect=REFUSED)


def probe_signing_secret(walk, route):
    for slug in (ACME_SLUG, str(walk.acme.workspace.pk)):
        walk.post("acme's signing secret", "/" + route, {"workspace": slug, "password": PASSWORD}, expect=REFUSED)


def probe_logout(walk, route):
    pass  # ends charlie's own session only; anonymous check below covers it


def probe_webhook(walk, route):
    """charlie's (globex's) key cannot reach acme's contacts, whatever the message names;
    acme's processed message ids do not make globex's messages duplicates."""
    token = base64.b64encode(f"{walk.globex.raw_key}:".encode()).decode()
    now = timezone.now().isoformat()
    messages = [
        {"type": "identify", "messageId": "acme-message-id-1", "userId": ACME_USER_ID, "timestamp": now,
         "traits": {"email": ACME_EMAIL, "plan": "hijacked", "name": "Hijacked"}},
        {"type": "delete", "userId": ACME_USER_ID, "messageId": "charlie-delete-1", "context": []},
        {"type": "delete", "userId": ACME_EMAIL, "messageId": "charlie-delete-2"},
        {"batch": [{"type": "identify", "messageId": "charlie-batch-1", "timestamp": now,
                    "traits": {"email": "road.runner@acme-anvilworks.test"}}]},
    ]
    for number, message in enumerate(messages):
        body = json.dumps(message)
        response = walk.client.generic(
            "POST", "/ingest/segment", body, content_type="application/json", HTTP_AUTHORIZATION=f"Basic {token}"
        )
        walk.scan("webhook with globex's key", response, sent=body)
        if response.status_code != 200:
            walk.problems.append(f"webhook {message.get('type', 'batch')} -> {response.status_code}")
        if number == 0:
            # acme already processed this messageId: for globex it is still new.
            if response.json().get("status") != "created":
                walk.problems.append(f"globex's identify with acme's messageId -> {response.json()}")
            if not Contact.objects.filter(workspace=walk.globex.workspace, email=ACME_EMAIL).exists():
                walk.problems.append("globex's identify naming acme's contact did not make globex's own contact")
    # acme's own key, wrong by one character, is just an unknown key.
    wrong = walk.acme.raw_keys[0][:-1] + ("A" if walk.acme.raw_keys[0][-1] != "A" else "B")
    body = json.dumps(messages[0])
    response = walk.client.generic(
        "POST", "/ingest/segment", body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {wrong}"
    )
    walk.scan("webhook with a near-miss acme key", response, sent=body)
    if response.status_code != 401:
        walk.problems.append(f"near-miss acme key -> {response.status_code}, expected 401")


def probe_admin_page(walk, route):
    walk.get("admin page", "/" + route, expect=(200,))


def probe_admin_app_index(walk, route):
    for app_label in ("contacts", "ingest", "auth"):
        walk.get("admin app index", f"/admin/{app_label}/", expect=(200, 403, 404))


def probe_admin_catch_all(walk, route):
    for model, obj in walk.acme.objects().items():
        base = f"/admin/{model._meta.app_label}/{model._meta.model_name}/{obj.pk}"
        walk.get("admin without slash", base, expect=ADMIN_REFUSED)
        walk.get("admin unknown suffix", base + "/nothing/", expect=ADMIN_REFUSED)


def probe_admin_view_on_site(walk, route):
    for model, obj in walk.acme.objects().items():
        content_type = ContentType.objects.get_for_model(model)
        walk.get("admin view on site", f"/admin/r/{content_type.pk}/{obj.pk}/", expect=REFUSED)


def probe_admin_autocomplete(walk, route):
    for model, model_admin in admin.site._registry.items():
        for model_field in model._meta.get_fields():
            if model_field.is_relation and model_field.many_to_one:
                query = {"app_label": model._meta.app_label, "model_name": model._meta.model_name,
                         "field_name": model_field.name}
                for term in ("acme", "wile", "alice", ""):
                    walk.get("admin autocomplete", "/" + route, {**query, "term": term}, expect=(200, 403, 404))


def probe_admin_changelist(walk, route, model):
    path = "/" + route
    acme = walk.acme
    queries = [
        {},
        {"q": ACME_EMAIL},
        {"q": "acme"},
        {"q": "Coyote"},
        {"q": acme.key.prefix},
        {"q": "alice"},
        {"workspace__id__exact": acme.workspace.pk},
        {"workspace": acme.workspace.pk},
        {"workspace__slug": ACME_SLUG},
        {"contact__id__exact": acme.contact.pk},
        {"contact": acme.contact.pk},
        {"user__id__exact": acme.alice.pk},
        {"id": acme.contact.pk},
        {"pk__in": ",".join(str(o.pk) for o in acme.objects().values())},
        {"_popup": "1", "_to_field": "id"},
        {"o": "-1"},
        {"all": ""},
        {"level": "close"},
        {"status": "active"},
    ]
    for query in queries:
        # 400: a lookup the admin does not allow (DisallowedModelAdminLookup).
        walk.get("admin changelist", path, query, expect=(200, 400, 403))
    # Bulk actions name acme's ids: nothing happens to them.
    acme_obj = acme.objects().get(model)
    if acme_obj is not None:
        for action in ("delete_selected", "rotate_api_key", "rotate_key"):
            walk.post("admin action on acme rows", path,
                      {"action": action, "_selected_action": [acme_obj.pk], "index": 0, "post": "yes"},
                      expect=(200, 403))


def probe_admin_add(walk, route, model):
    path = "/" + route
    walk.get("admin add form", path, expect=(200, 403))
    acme = walk.acme
    planted = {
        Contact: {"workspace": acme.workspace.pk, "email": "planted@example.com", "traits": "{}", "trait_times": "{}"},
        Membership: {"workspace": acme.workspace.pk, "user": walk.globex.charlie.pk},
        Interaction: {"workspace": acme.workspace.pk, "contact": acme.contact.pk, "day": "2026-01-01"},
        ApiKey: {"workspace": acme.workspace.pk, "prefix": "nat_planted", "key_hash": "0" * 64},
    }.get(model)
    if planted is not None:
        walk.post("admin add into acme", path, planted, expect=(200, 403))


def probe_admin_object(walk, route, model, kind):
    suffix = {"history": "history/", "delete": "delete/", "change": "change/", "object": ""}[kind]
    acme_obj = walk.acme.objects().get(model)
    if acme_obj is None:
        walk.problems.append(f"{route}: no acme object of {model.__name__} to probe with")
        return
    url = admin_object_url(model, acme_obj, suffix)
    walk.get(f"admin {kind} of acme's {model.__name__}", url, expect=ADMIN_REFUSED)
    if kind == "change":
        data = form_data(acme_obj, name="renamed by charlie") if hasattr(acme_obj, "name") else form_data(acme_obj)
        walk.post(f"admin change of acme's {model.__name__}", url, data, expect=ADMIN_REFUSED)
    if kind == "delete":
        walk.post(f"admin delete of acme's {model.__name__}", url, {"post": "yes"}, expect=ADMIN_REFUSED)
    own = walk.globex.objects().get(model)
    if own is not None and kind in ("change", "history"):
        walk.get(f"admin {kind} of own {model.__name__}", admin_object_url(model, own, suffix), expect=(200,))
        if kind == "change" and any(f.name == "workspace" for f in model._meta.get_fields()):
            # Moving one's own row into acme is refused (acme is not a choice).
            walk.post(f"admin move own {model.__name__} into acme", admin_object_url(model, own, suffix),
                      form_data(own, workspace=walk.acme.workspace.pk), expect=(200, 403))


def probe_admin_user_password(walk, route, model):
    walk.get("admin password of alice", f"/admin/auth/user/{walk.acme.alice.pk}/password/", expect=ADMIN_REFUSED)
    walk.post("admin set alice's password", f"/admin/auth/user/{walk.acme.alice.pk}/password/",
              {"password1": "taken over 123!", "password2": "taken over 123!", "usable_password": "true"},
              expect=ADMIN_REFUSED)


# route -> what the walk does there, and what an anonymous visitor gets:
#   "login": a GET or POST is sent to a login page; "public": anyone may see it;
#   "api": 401 without a key.
ROUTES = {
    # The founders' pages.
    "": (lambda w, r: probe_app_page(w, r), "login"),
    "contacts/": (
        lambda w, r: probe_app_page(w, r, queries=[{"q": ACME_EMAIL}, {"q": "acme"}, {"q": "Coyote"},
                                                    {"level": "close"}, {"sort": "email"}, {"page": "2"}]),
        "login",
    ),
    "contacts/export.csv": (
        lambda w, r: probe_app_page(w, r, queries=[{"q": "acme"}, {"level": "close"}]),
        "login",
    ),
    "contacts/<int:contact_id>/": (probe_app_contact, "login"),
    # Settings: the API keys page and its POSTs.
    "settings/api-keys/": (lambda w, r: probe_app_page(w, r), "login"),
    "settings/api-keys/rotate/": (probe_rotate, "login"),
    "settings/api-keys/<int:key_id>/revoke/": (probe_revoke, "login"),
    "settings/api-keys/signing-secret/": (probe_signing_secret, "login"),
    "settings/api-keys/signing-secret/clear/": (probe_signing_secret, "login"),
    # Signing in and out, health.
    "accounts/login/": (probe_public, "public"),
    "accounts/logout/": (probe_logout, "login"),
    "healthz": (probe_public, "public"),
    # The webhook, and its OpenAPI description (public: it describes no workspace).
    "^ingest/segment/?$": (probe_webhook, "api"),
    "api/schema/": (probe_public, "public"),
    # The admin's own pages.
    "admin/": (probe_admin_page, "login"),
    "admin/login/": (probe_admin_page, "public"),
    "admin/logout/": (probe_logout, "login"),
    "admin/password_change/": (probe_admin_page, "login"),
    "admin/password_change/done/": (probe_admin_page, "login"),
    "admin/autocomplete/": (probe_admin_autocomplete, "login"),
    "admin/jsi18n/": (probe_admin_page, "login"),
    "admin/r/<path:content_type_id>/<path:object_id>/": (probe_admin_view_on_site, "login"),
    "admin/^(?P<app_label>auth|contacts|ingest)/$": (probe_admin_app_index, "login"),
    "admin/(?P<url>.*)$": (probe_admin_catch_all, "login"),
}


def classified_routes():
    routes = dict(ROUTES)
    for route, (kind, model) in {**admin_model_routes(), **ADMIN_EXTRA_MODEL_ROUTES}.items():
        if kind == "changelist":
            routes[route] = (lambda w, r, m=model: probe_admin_changelist(w, r, m), "login")
        elif kind == "add":
            routes[route] = (lambda w, r, m=model: probe_admin_add(w, r, m), "login")
        elif kind == "user password":
            routes[route] = (lambda w, r, m=model: probe_admin_user_password(w, r, m), "login")
        else:
            routes[route] = (lambda w, r, m=model, k=kind: probe_admin_object(w, r, m, k), "login")
    return routes


# --- the tests -----------------------------------------------------------------------


def test_every_url_is_classified(acme):
    """A new URL fails here until it is added to ROUTES (and so to the walk below)."""
    known = classified_routes()
    unclassified = [route for route in all_routes() if route not in known]
    assert unclassified == [], f"classify these URLs in tests/test_tenant_isolation.py ROUTES: {unclassified}"
    # Each model in the admin has an acme object to probe its object URLs with.
    missing = [model.__name__ for model in admin.site._registry if model not in acme.objects()]
    assert missing == [], f"give acme an object of these admin models (Acme.objects()): {missing}"


def walk_every_url(acme, globex, only=""):
    """The walk over every URL (or only the routes starting with `only`)."""
    client = Client()
    client.force_login(globex.charlie)
    walk = Walk(acme, globex, client)
    routes = classified_routes()
    # The webhook last: what charlie posts there becomes globex's own data, which may
    # legitimately carry acme's email addresses from then on.
    for route in sorted(all_routes(), key=lambda r: routes.get(r, (None, ""))[1] == "api"):
        if not route.startswith(only):
            continue
        probe, _anonymous = routes.get(route, (None, None))
        if probe is None:
            walk.problems.append(f"unclassified URL {route!r}")
            continue
        probe(walk, route)
    return walk


@pytest.mark.parametrize("permissions", ["member staff with the rotate permission", "every contacts/ingest permission"])
def test_charlie_sees_and_changes_nothing_of_acme_on_any_url(acme, globex, permissions):
    if permissions.startswith("every"):
        grant_every_app_permission(globex.charlie)
    before = acme_rows(acme)

    walk = walk_every_url(acme, globex)

    assert walk.problems == [], "\n".join(walk.problems)
    assert acme_rows(acme) == before
    assert not Membership.objects.filter(user=globex.charlie, workspace=acme.workspace).exists()
    assert walk.requests > 150  # the walk did visit (admin URLs, queries, POSTs)


def test_the_scan_would_see_acme_data_alice_sees_it_on_the_same_urls(acme, globex):
    """The distinctive strings do appear on these pages for their owner: a leak would show."""
    client = Client()
    client.force_login(acme.alice)
    pages = [
        "/", "/contacts/", f"/contacts/{acme.contact.pk}/", "/contacts/export.csv", "/settings/api-keys/",
        f"/admin/contacts/contact/{acme.contact.pk}/change/", "/admin/contacts/interaction/",
        "/admin/ingest/apikeyevent/", f"/admin/contacts/contact/{acme.contact.pk}/history/",
        "/admin/contacts/workspace/", "/admin/ingest/apikey/",
    ]
    seen = "\n".join(body_of(client.get(page, {"workspace": ACME_SLUG} if not page.startswith("/admin") else None))
                     for page in pages).lower()
    alice = acme.alice
    alice.is_superuser = True  # only a superuser may see users and groups in the admin
    alice.save()
    seen += "\n".join(body_of(client.get(p)) for p in ("/admin/auth/user/", "/admin/auth/group/")).lower()
    unseen = [t for t in ACME_TOKENS if t.lower() not in seen and t not in NEVER_SHOWN]
    assert unseen == []
    assert acme.key.prefix.lower() in seen


def test_charlie_sees_his_own_workspace_on_the_same_pages(acme, globex):
    client = Client()
    client.force_login(globex.charlie)
    for page in ("/", "/contacts/", f"/contacts/{globex.contact.pk}/", "/contacts/export.csv"):
        response = client.get(page)
        assert response.status_code == 200
        assert GLOBEX_EMAIL in body_of(response) or "Hank Scorpio" in body_of(response)
    assert globex.key.prefix in body_of(client.get("/settings/api-keys/"))


def test_anonymous_visitors_are_sent_to_a_login_page_from_every_url(acme, globex):
    client = Client()
    routes = classified_routes()
    concrete = {
        "<int:contact_id>": str(acme.contact.pk),
        "<int:key_id>": str(acme.key.pk),
        "<path:object_id>": "1",
        "<id>": str(acme.alice.pk),
        "<path:content_type_id>": str(ContentType.objects.get_for_model(Contact).pk),
    }
    problems = []
    before = acme_rows(acme)
    for route in all_routes():
        _probe, anonymous = routes[route]
        if route.startswith("admin/^") or route.startswith("admin/("):
            path = "/admin/contacts/"
        elif route.startswith("^"):
            path = "/" + route.strip("^$").replace("/?", "")
        else:
            path = "/" + route
            for placeholder, value in concrete.items():
                path = path.replace(placeholder, value)
        for method in ("get", "post"):
            response = getattr(client, method)(path, follow=True)
            landed = response.request["PATH_INFO"]
            to_login = bool(response.redirect_chain) and landed in ("/accounts/login/", "/admin/login/")
            if anonymous == "login" and not to_login and response.status_code != 405:
                problems.append(f"{method.upper()} {path} -> {response.status_code} at {landed}")
            if anonymous == "api" and response.status_code not in (401, 405):
                problems.append(f"{method.upper()} {path} -> {response.status_code}, expected 401")
            if Walk(acme, globex, client).leaks(body_of(response), sent=path):
                problems.append(f"{method.upper()} {path} shows acme data to an anonymous visitor")
    assert problems == [], "\n".join(problems)
    assert acme_rows(acme) == before


def _any_contact(user, contact_id):
    return Contact.objects.select_related("workspace").get(pk=contact_id)


@pytest.mark.parametrize(
    "broken_rule, attribute, replacement, routes",
    [
        ("a contact page that forgets to scope", "contacts.views.get_contact_for_user", _any_contact,
         "contacts/<int:contact_id>/"),
        ("an admin that forgets to scope", "contacts.admin.WorkspaceScopedAdminMixin._scoped",
         lambda self, request: False, "admin/contacts/contact/"),
    ],
)
def test_the_walk_catches_a_url_that_forgets_the_workspace_scope(acme, globex, monkeypatch, broken_rule,
                                                                  attribute, replacement, routes):
    """The walk has teeth: break one scoping rule and it reports acme's data."""
    monkeypatch.setattr(attribute, replacement)
    walk = walk_every_url(acme, globex, only=routes)
    assert any("shows acme data" in problem for problem in walk.problems), broken_rule
