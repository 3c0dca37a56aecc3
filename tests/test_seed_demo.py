"""seed_demo and demo_login: a demo that looks alive, the same for a seed, and a first
run that prints a login, a key and a curl that work."""

import base64
import datetime as dt
import io
import json
import re
from collections import Counter

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from contacts import closeness
from contacts.management.commands import demo_login
from contacts.management.commands.seed_demo import demo_messages
from contacts.models import Contact, Interaction, Workspace
from ingest.models import ApiKey, ProcessedMessage, RejectedMessage

pytestmark = pytest.mark.django_db


def seed(*args):
    out = io.StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def content(slug):
    """What a founder sees of a workspace, without ids and creation times."""
    workspace = Workspace.objects.get(slug=slug)
    today = workspace.today()
    contacts = sorted(
        (c.email, c.name, c.user_id, json.dumps(c.traits, sort_keys=True), c.last_interaction_day,
         c.closeness_on(today).level, round(c.closeness_on(today).strength, 9))
        for c in Contact.objects.filter(workspace=workspace)
    )
    # Today's times are capped at "a minute ago", so they move between runs; days do not.
    interactions = sorted(
        (i.contact.email, i.day, i.description, i.url, i.event_count)
        for i in Interaction.objects.filter(workspace=workspace).select_related("contact")
    )
    rejected = sorted(RejectedMessage.objects.filter(workspace=workspace).values_list("status", "message"))
    return contacts, interactions, rejected


def test_the_same_seed_gives_the_same_demo_and_a_second_run_doubles_nothing(db):
    seed("--seed", "7", "--workspace", "demo-a")
    seed("--seed", "7", "--workspace", "demo-b")
    first = content("demo-a")
    assert first == content("demo-b")
    processed = ProcessedMessage.objects.filter(workspace__slug="demo-a").count()
    output = seed("--seed", "7", "--workspace", "demo-a")
    assert content("demo-a") == first
    assert ProcessedMessage.objects.filter(workspace__slug="demo-a").count() == processed
    assert re.search(r"messages \(\d+ duplicate\)", output)


def test_another_seed_gives_other_people():
    now = timezone.now()

    def emails(seed_value):
        messages, _ = demo_messages(seed=seed_value, today=now.date(), now=now, tz=dt.timezone.utc)
        return {message["traits"]["email"] for message in messages}

    assert emails(7) == emails(7)
    assert emails(7) != emails(8)
    assert len(emails(8)) >= 200


@pytest.fixture(scope="module")
def demo(django_db_setup, django_db_blocker):
    """One seeded demo for the tests that only read it (seeding takes seconds)."""
    with django_db_blocker.unblock():
        seed("--workspace", "demo-shared")
        workspace = Workspace.objects.get(slug="demo-shared")
        yield workspace
        workspace.delete()


def test_the_demo_spreads_contacts_over_every_level_and_has_some_losing_touch(demo):
    today = demo.today()
    contacts = Contact.objects.filter(workspace=demo)
    levels = Counter(contact.closeness_on(today).level for contact in contacts)
    assert 200 <= contacts.count() <= 500
    for level in closeness.LEVELS:
        assert levels[level] >= 5, levels
    assert contacts.losing_touch(today).count() >= 5


def test_the_demo_has_realistic_traits_engage_audiences_and_rejected_messages(demo):
    contacts = Contact.objects.filter(workspace=demo)
    assert contacts.exclude(name="").count() == contacts.count()
    assert contacts.filter(traits__has_key="company").count() == contacts.count()
    for audience in ("power_users", "at_risk_accounts"):
        assert contacts.filter(**{f"traits__{audience}": True}).count() >= 5
    # Engage-only profiles exist without any interaction: closeness "none".
    assert contacts.filter(traits__newsletter_subscribers=True, closeness_log__isnull=True).count() >= 5
    assert Interaction.objects.filter(workspace=demo, event_count__gt=1).exists()
    statuses = set(RejectedMessage.objects.filter(workspace=demo).values_list("status", flat=True))
    assert statuses == {400, 501}


def test_demo_login_gives_a_key_to_a_workspace_that_has_none_and_its_curl_works(db, client, tmp_path, monkeypatch):
    monkeypatch.setattr(demo_login, "CREDENTIALS", tmp_path / "credentials.json")
    seed()  # seed_demo alone makes no API key
    workspace = Workspace.objects.get(slug="demo")
    assert not ApiKey.objects.filter(workspace=workspace).exists()

    out = io.StringIO()
    call_command("demo_login", "--url", "http://127.0.0.1:8107", stdout=out)
    printed = out.getvalue()
    key = re.search(r"API key:\s+(\S+)", printed).group(1)
    password = re.search(r"login:\s+admin / (\S+)", printed).group(1)
    assert get_user_model().objects.get(username="admin").check_password(password)
    assert "curl -sS -u '" + key + ":'" in printed
    assert "http://127.0.0.1:8107/ingest/segment" in printed

    # The curl's body, with its shell-substituted timestamp filled in.
    body = re.search(r"-d '(.*)'$", printed.strip(), re.M).group(1).replace("'$(date -u +%Y-%m-%dT%H:%M:%SZ)'", "2026-01-02T03:04:05Z")
    token = base64.b64encode(f"{key}:".encode()).decode()
    response = client.post("/ingest/segment", body, content_type="application/json", HTTP_AUTHORIZATION=f"Basic {token}")
    assert response.status_code == 200, response.content
    assert response.json()["status"] in ("created", "merged")

    # A second start prints the same login and key, and makes no new one.
    again = io.StringIO()
    call_command("demo_login", "--url", "http://127.0.0.1:8107", stdout=again)
    assert key in again.getvalue() and password in again.getvalue()
    assert ApiKey.objects.filter(workspace=workspace).count() == 1


def test_demo_login_never_resets_a_password_the_admin_chose(db, tmp_path, monkeypatch):
    monkeypatch.setattr(demo_login, "CREDENTIALS", tmp_path / "credentials.json")
    seed()
    call_command("demo_login", stdout=io.StringIO())
    admin = get_user_model().objects.get(username="admin")
    admin.set_password("chosen by the founder")
    admin.save()
    out = io.StringIO()
    call_command("demo_login", stdout=out)
    admin.refresh_from_db()
    assert admin.check_password("chosen by the founder")
    assert "login:     admin / (the password you set" in out.getvalue()
    assert (tmp_path / "credentials.json").stat().st_mode & 0o077 == 0
