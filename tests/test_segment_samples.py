"""Each captured Segment sample (tests/fixtures/segment/) replayed through the webhook,
with the rows it must leave behind."""

import datetime as dt

import pytest

from contacts.models import Contact, Interaction
from ingest.models import ProcessedMessage, RejectedMessage
from ingest.serializers import STANDARD_DESCRIPTION
from tests.conftest import load_fixture

pytestmark = pytest.mark.django_db

UTC = dt.timezone.utc


def stored_contacts():
    return list(Contact.objects.order_by("email").values("email", "name", "user_id", "closeness_log"))


def stored_interactions():
    return list(
        Interaction.objects.order_by("contact__email", "day").values(
            "contact__email", "day", "occurred_at", "last_occurred_at", "description", "url", "event_count"
        )
    )


def test_the_recommended_format(webhook):
    response = webhook.post(load_fixture("identify-recommended"))
    assert response.status_code == 200
    assert response.json() == {"status": "created", "code": 200, "email": "peter@initech.com", "day": "2020-05-31"}
    moment = dt.datetime(2020, 5, 31, 17, 55, 47, 263000, tzinfo=UTC)
    assert stored_interactions() == [
        {
            "contact__email": "peter@initech.com",
            "day": dt.date(2020, 5, 31),
            "occurred_at": moment,
            "last_occurred_at": moment,
            "description": "https://initech.com/pricing",
            "url": "https://initech.com/pricing",
            "event_count": 1,
        }
    ]
    contact = Contact.objects.get()
    assert contact.traits == {"email": "peter@initech.com"}
    assert contact.first_seen_at == moment
    assert contact.last_interaction_day == dt.date(2020, 5, 31)
    assert contact.closeness_log == dt.date(2020, 5, 31).toordinal() / 14


def test_the_flat_email_format_gets_the_standard_description(webhook):
    response = webhook.post(load_fixture("identify-flat-email"))
    assert response.json()["status"] == "created"
    [row] = stored_interactions()
    assert (row["contact__email"], row["description"], row["url"]) == ("test@example.org", STANDARD_DESCRIPTION, "")
    assert row["day"] == dt.date(2020, 5, 31)


def test_the_event_name_replaces_the_url(webhook):
    webhook.post(load_fixture("identify-event-name"))
    [row] = stored_interactions()
    assert (row["contact__email"], row["description"], row["url"]) == ("test@example.org", "User logged in", "")


def test_an_analytics_js_identify(webhook):
    response = webhook.post(load_fixture("identify-analytics-js"))
    assert response.json() == {"status": "created", "code": 200, "email": "jane.doe@example.com", "day": "2024-06-01"}
    assert stored_contacts() == [
        {
            "email": "jane.doe@example.com",
            "name": "Jane Doe",
            "user_id": "usr_8842",
            "closeness_log": dt.date(2024, 6, 1).toordinal() / 14,
        }
    ]
    assert Contact.objects.get().traits == {
        "email": "Jane.Doe@Example.com",
        "firstName": "Jane",
        "lastName": "Doe",
        "plan": "pro",
    }
    moment = dt.datetime(2024, 6, 1, 9, 12, 3, 395000, tzinfo=UTC)
    url = "https://app.example.com/settings/billing?tab=invoices"
    assert stored_interactions() == [
        {
            "contact__email": "jane.doe@example.com",
            "day": dt.date(2024, 6, 1),
            "occurred_at": moment,
            "last_occurred_at": moment,
            "description": url,
            "url": url,
            "event_count": 1,
        }
    ]
    assert ProcessedMessage.objects.get().message_id == "ajs-next-1717171717171-3f1c9a7e-4b8d-4c55-9a0e-6f2b9d1c8e42"


def test_an_engage_audience_sync_updates_traits_without_an_interaction(webhook):
    webhook.post(load_fixture("identify-analytics-js"))
    response = webhook.post(load_fixture("identify-engage-audience"))
    assert response.json() == {"status": "traits_updated", "code": 200, "email": "jane.doe@example.com"}
    contact = Contact.objects.get()
    assert contact.traits["order_completed_last_30days"] is True
    assert contact.traits["plan"] == "pro"
    # The audience sync is older than the identify: it does not overwrite its email spelling.
    assert contact.traits["email"] == "Jane.Doe@Example.com"
    assert Interaction.objects.count() == 1
    assert contact.last_interaction_day == dt.date(2024, 6, 1)


def test_an_engage_audience_sync_alone_creates_the_contact_only(webhook):
    webhook.post(load_fixture("identify-engage-audience"))
    assert stored_contacts() == [
        {"email": "jane.doe@example.com", "name": "", "user_id": "usr_8842", "closeness_log": None}
    ]
    assert stored_interactions() == []


def test_a_user_deletion_request_removes_the_user(webhook):
    webhook.post(load_fixture("identify-analytics-js"))
    webhook.post(load_fixture("identify-recommended"))
    response = webhook.post(load_fixture("delete-user"))
    assert response.status_code == 200
    assert response.json()["status"] == "deleted"
    assert response.json()["deleted"] == 1
    assert [c["email"] for c in stored_contacts()] == ["peter@initech.com"]
    assert [i["contact__email"] for i in stored_interactions()] == ["peter@initech.com"]


def test_a_track_call_is_501_and_stores_nothing(webhook):
    response = webhook.post(load_fixture("track-not-supported"))
    assert response.status_code == 501
    assert "Only identify" in response.json()["message"]
    assert stored_contacts() == [] and stored_interactions() == []
    assert RejectedMessage.objects.get().status == 501


def test_a_webhooks_actions_batch_keeps_the_good_messages(webhook):
    response = webhook.post(load_fixture("batch-actions-array"))
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert [r["status"] for r in body["results"]] == ["created", "created", 400]
    assert body["results"][2]["message"] == "Missing email"
    rows = stored_interactions()
    assert [(r["contact__email"], r["day"], r["occurred_at"], r["description"], r["url"]) for r in rows] == [
        ("a@example.com", dt.date(2024, 6, 2), dt.datetime(2024, 6, 2, 8, tzinfo=UTC), STANDARD_DESCRIPTION, ""),
        (
            "b@example.com",
            dt.date(2024, 6, 2),
            dt.datetime(2024, 6, 2, 7, 30, tzinfo=UTC),
            "https://example.com/docs",
            "https://example.com/docs",
        ),
    ]
    assert RejectedMessage.objects.get().message == "Missing email"


@pytest.mark.parametrize(
    "name",
    ["identify-recommended", "identify-flat-email", "identify-event-name", "identify-analytics-js", "identify-engage-audience", "batch-actions-array", "delete-user"],
)
def test_replaying_a_sample_changes_nothing(webhook, name):
    webhook.post(load_fixture(name))
    before = (stored_contacts(), stored_interactions(), list(Contact.objects.values_list("traits", flat=True)))
    second = webhook.post(load_fixture(name))
    assert second.status_code == 200
    statuses = [r["status"] for r in second.json().get("results", [second.json()])]
    assert all(s in ("duplicate", 400) for s in statuses)
    assert (stored_contacts(), stored_interactions(), list(Contact.objects.values_list("traits", flat=True))) == before


def test_samples_in_a_paris_workspace_land_on_the_paris_day(webhook, workspace):
    workspace.timezone = "Europe/Paris"
    workspace.save()
    webhook.post(load_fixture("identify-recommended"))  # 17:55 UTC is 19:55 in Paris, the same day
    webhook.post(load_fixture("batch-actions-array"))
    assert dict(Interaction.objects.values_list("contact__email", "day")) == {
        "peter@initech.com": dt.date(2020, 5, 31),
        "a@example.com": dt.date(2024, 6, 2),
        "b@example.com": dt.date(2024, 6, 2),
    }


# A messy corpus, as real Segment sources send it ------------------------------------------

CORPUS_STATUSES = [
    "created", "created", "merged", "duplicate", "created", 501, 400, 400, 400, "created", 400,
    "traits_updated", 400, "created", "deleted",
]


def corpus_rows():
    contacts = {
        c["email"]: (c["name"], c["user_id"]) for c in Contact.objects.values("email", "name", "user_id")
    }
    interactions = [
        (i["contact__email"], i["day"].isoformat(), i["occurred_at"].isoformat(), i["last_occurred_at"].isoformat(),
         i["description"], i["url"], i["event_count"])
        for i in stored_interactions()
    ]
    return contacts, interactions


EXPECTED_CORPUS_ROWS = (
    {
        "alice.smith@example.com": ("Alice Smith", "12345"),
        "bob@example.com": ("Bob Stone", ""),
        "carol@example.com": ("", ""),
    },
    [
        ("alice.smith@example.com", "2024-06-01", "2024-06-01T06:00:00+00:00", "2024-06-01T07:12:03.123456+00:00",
         "Signed up", "", 2),
        ("bob@example.com", "2024-06-01", "2024-06-01T09:05:03+00:00", "2024-06-01T09:05:03+00:00",
         "https://example.com/pricing", "https://example.com/pricing", 1),
        ("bob@example.com", "2024-06-02", "2024-06-02T02:00:00+00:00", "2024-06-02T02:00:00+00:00",
         STANDARD_DESCRIPTION, "", 1),
        ("carol@example.com", "2024-06-03", "2024-06-03T23:30:00+00:00", "2024-06-03T23:30:00+00:00",
         "javascript:alert(1)", "", 1),
    ],
)


def test_a_messy_corpus_as_one_batch_gives_the_expected_statuses_and_rows(webhook):
    response = webhook.post(load_fixture("messy-corpus"))
    assert response.status_code == 200
    assert [r["status"] for r in response.json()["results"]] == CORPUS_STATUSES
    assert corpus_rows() == EXPECTED_CORPUS_ROWS
    assert Contact.objects.get(email="bob@example.com").traits == {
        "email": "bob@example.com", "first_name": "Bob", "lastName": "Stone"
    }
    assert RejectedMessage.objects.count() == CORPUS_STATUSES.count(400) + CORPUS_STATUSES.count(501)


def test_a_messy_corpus_posted_one_message_at_a_time_gives_the_same(webhook):
    statuses = []
    for message in load_fixture("messy-corpus"):
        response = webhook.post(message)
        body = response.json()
        statuses.append(body["status"] if response.status_code == 200 else response.status_code)
    assert statuses == CORPUS_STATUSES
    assert corpus_rows() == EXPECTED_CORPUS_ROWS


def test_a_messy_corpus_in_small_batches_gives_the_same(webhook):
    corpus = load_fixture("messy-corpus")
    statuses = []
    for start in range(0, len(corpus), 4):
        statuses += [r["status"] for r in webhook.post({"batch": corpus[start:start + 4]}).json()["results"]]
    assert statuses == CORPUS_STATUSES
    assert corpus_rows() == EXPECTED_CORPUS_ROWS
