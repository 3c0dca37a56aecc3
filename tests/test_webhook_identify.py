"""An identify becomes one interaction per contact per day (PRODUCT.md §2): field
look-up, email, timestamp, description, day, merging, traits, Engage, delete, types."""

import datetime as dt
import itertools
import re

import pytest
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator, validate_email
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from contacts import closeness
from contacts.models import Contact, Interaction
from ingest.models import ProcessedMessage, RejectedMessage
from ingest import serializers
from ingest.serializers import STANDARD_DESCRIPTION
from tests.conftest import Webhook
from tests.factories import ContactFactory, api_key_for
from tests.segment_messages import identify, without

pytestmark = pytest.mark.django_db

UTC = dt.timezone.utc


@pytest.fixture(autouse=True)
def _no_rate_limit(settings):
    settings.INGEST_RATE_LIMIT = 0


def at(text):
    """A UTC moment written without its zone."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def interaction(email="jane@example.com"):
    return Interaction.objects.get(contact__email=email)


def assert_rejected(response, status, message):
    assert response.status_code == status, response.content
    assert response.json()["message"].startswith(message)
    assert not Interaction.objects.exists()


# Field names ---------------------------------------------------------------------------


def test_field_names_are_matched_ignoring_case(webhook):
    message = {
        "TYPE": "Identify",
        "messageID": "abc",
        "Timestamp": "2024-06-01T09:00:00Z",
        "Traits": {"EMAIL": "Jane@Example.com", "Plan": "pro"},
        "Context": {"Page": {"URL": "https://example.com/pricing"}},
        "UserId": "usr_1",
    }
    response = webhook.post(message)
    assert response.status_code == 200
    contact = Contact.objects.get()
    assert (contact.email, contact.user_id, contact.traits["Plan"]) == ("jane@example.com", "usr_1", "pro")
    assert interaction().description == "https://example.com/pricing"
    # messageID was read: the same id again is a duplicate.
    assert webhook.post(dict(message, Timestamp="2024-06-02T09:00:00Z")).json()["status"] == "duplicate"


@pytest.mark.parametrize("field", ["email", "Email", "EMAIL", "e_mail", "E-Mail"])
def test_the_top_level_email_is_found_in_any_casing(webhook, field):
    message = {"type": "identify", "timestamp": "2024-06-01T09:00:00Z", field: "jane@example.com"}
    assert webhook.post(message).json()["email"] == "jane@example.com"


@pytest.mark.parametrize("field", ["timestamp", "Timestamp", "TIMESTAMP"])
def test_the_timestamp_is_found_in_any_casing(webhook, field):
    message = {"type": "identify", field: "2024-06-01T09:00:00Z", "email": "jane@example.com"}
    assert webhook.post(message).json()["day"] == "2024-06-01"


# Email -----------------------------------------------------------------------------------

EMAIL_SOURCES = [
    ("traits", lambda m: m["traits"].update(email="traits@example.com")),
    ("context.traits", lambda m: m["context"]["traits"].update(email="context@example.com")),
    ("email", lambda m: m.update(email="top@example.com")),
    ("properties", lambda m: m["properties"].update(email="properties@example.com")),
    ("userId", lambda m: m.update(userId="userid@example.com")),
]


@pytest.mark.parametrize("first", range(len(EMAIL_SOURCES)), ids=[name for name, _ in EMAIL_SOURCES])
def test_the_email_is_the_first_found_in_the_documented_order(webhook, first):
    message = {"type": "identify", "timestamp": "2024-06-01T09:00:00Z", "traits": {}, "context": {"traits": {}}, "properties": {}}
    for _, put in EMAIL_SOURCES[first:]:
        put(message)
    expected = {0: "traits", 1: "context", 2: "top", 3: "properties", 4: "userid"}[first]
    assert webhook.post(message).json()["email"] == f"{expected}@example.com"
    assert Contact.objects.get().email == f"{expected}@example.com"


def test_the_email_is_normalized(webhook):
    webhook.post(identify("  Jane.Doe@Example.COM \n"))
    webhook.post(identify("jane.doe@example.com", timestamp="2024-06-01T10:00:00Z"))
    contact = Contact.objects.get()
    assert contact.email == "jane.doe@example.com"
    assert contact.interactions.get().event_count == 2


def test_a_message_without_email_is_refused(webhook):
    assert_rejected(webhook.post(identify(None, userId="usr_1")), 400, "Missing email")
    assert_rejected(webhook.post(without(identify(), "traits")), 400, "Missing email")
    assert_rejected(webhook.post(identify("")), 400, "Missing email")


def test_a_blank_email_is_skipped_for_the_next_source(webhook):
    response = webhook.post(identify("   ", email="jane@example.com"))
    assert response.json()["email"] == "jane@example.com"


def test_a_userid_that_is_not_an_email_is_no_email(webhook):
    assert_rejected(webhook.post(identify(None, userId="twitter:@jane")), 400, "Missing email")
    assert_rejected(webhook.post(identify(None, userId=12345)), 400, "Missing email")


@pytest.mark.parametrize("address", ["not-an-email", "jane@", "@example.com", "jane doe@example.com", "a" * 250 + "@example.com"])
def test_an_invalid_email_is_refused(webhook, address):
    assert_rejected(webhook.post(identify(address)), 400, "Invalid email address")
    assert not Contact.objects.exists()


@pytest.mark.parametrize("address", ["jane@localhost", "jane@[192.0.2.1]", "jane@[2001:db8::1]", "\"jane..doe\"@example.com"])
def test_the_rarer_valid_forms_are_accepted(webhook, address):
    """An address literal, localhost and a quoted user part: Django's EmailValidator accepts them."""
    assert webhook.post(identify(address)).json()["status"] == "created"
    assert Contact.objects.get().email == address


@pytest.mark.parametrize("domain", [
    "example.com", "bücher.example", "example.xn--p1ai", "example.xn--ı1", "example.xn--ſ0", "xn--ı.example",
    "example.ıſ", "example.\u212a1", "example.xn--\u212a1", "exa_mple.com", "-example.com", "example.c",
])
def test_the_domain_pattern_without_case_folding_gives_the_validators_verdicts(domain):
    # The domain pattern is compiled without IGNORECASE, for addresses already in lower
    # case: its ASCII class also takes dotless ı and long ſ, which case folding matched.
    address = f"jane@{domain}".lower()
    serializers._is_valid_email.cache_clear()
    try:
        validate_email(address)
        expected = True
    except ValidationError:
        expected = False
    assert bool(serializers._EMAIL_DOMAIN.match(address.rsplit("@", 1)[1])) is expected
    assert serializers._is_valid_email(address) is expected


def test_the_domain_pattern_is_made_of_the_validators_own_text():
    # Built from the plain strings Django builds its pattern of (reading the validator's
    # lazy pattern would compile it, with case folding, at every start): the same text.
    assert serializers._DOMAIN_PATTERN == EmailValidator.domain_regex.pattern
    assert serializers._DOMAIN_FLAGS | re.UNICODE == EmailValidator.domain_regex.flags


@examples(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.sampled_from(list("az09.-_+@[]:\"ü \x00ıſ\u212ax")), max_size=40) | st.emails())
def test_an_email_is_valid_exactly_when_djangos_validator_says_so(address):
    """The look-up's own use of the validator's patterns gives the validator's verdict."""
    serializers._is_valid_email.cache_clear()
    try:
        validate_email(address)
        expected = len(address) <= serializers.EMAIL_MAX
    except ValidationError:
        expected = False
    assert serializers._is_valid_email(address) is expected


def test_the_first_email_found_decides_even_when_it_is_invalid(webhook):
    message = identify("not-an-email", context={"traits": {"email": "jane@example.com"}})
    assert_rejected(webhook.post(message), 400, "Invalid email address")


# Timestamp -------------------------------------------------------------------------------

TIMESTAMPS = [
    ("2024-06-01T09:12:03Z", "2024-06-01T09:12:03"),
    ("2024-06-01T09:12:03.395Z", "2024-06-01T09:12:03.395"),
    ("2024-06-01T09:12:03.1Z", "2024-06-01T09:12:03.100"),
    ("2024-06-01T09:12:03.123456789Z", "2024-06-01T09:12:03.123456"),
    ("2024-06-01T09:12:03.123456789+0200", "2024-06-01T07:12:03.123456"),
    ("2024-06-01T09:12:03+02:00", "2024-06-01T07:12:03"),
    ("2024-06-01T09:12:03-05:30", "2024-06-01T14:42:03"),
    ("2024-06-01T09:12:03-0530", "2024-06-01T14:42:03"),
    ("2024-06-01T09:12:03+02", "2024-06-01T07:12:03"),
    ("2024-06-01T09:12:03.000+00:00", "2024-06-01T09:12:03"),
    ("2024-6-1T9:5:3Z", "2024-06-01T09:05:03"),
    ("2024-06-01T09:12:03", "2024-06-01T09:12:03"),
    ("2024-06-01 09:12:03", "2024-06-01T09:12:03"),
    ("2024-06-01t09:12:03z", "2024-06-01T09:12:03"),
    ("2024-06-01T09:12Z", "2024-06-01T09:12:00"),
    (" 2024-06-01T09:12:03Z ", "2024-06-01T09:12:03"),
]


@pytest.mark.parametrize("sent, utc", TIMESTAMPS, ids=[t for t, _ in TIMESTAMPS])
def test_every_iso_8601_form_is_accepted(webhook, sent, utc):
    response = webhook.post(identify(timestamp=sent))
    assert response.status_code == 200, response.content
    expected = dt.datetime.fromisoformat(utc).replace(tzinfo=UTC)
    assert interaction().occurred_at == expected
    assert response.json()["day"] == expected.date().isoformat()


def test_a_message_without_timestamp_is_refused(webhook):
    assert_rejected(webhook.post(without(identify(), "timestamp")), 400, "Missing timestamp")
    assert_rejected(webhook.post(identify(timestamp="")), 400, "Missing timestamp")
    assert_rejected(webhook.post(identify(timestamp=None)), 400, "Missing timestamp")


@pytest.mark.parametrize(
    "sent",
    ["yesterday", "2024-13-01T00:00:00Z", "2024-02-30T00:00:00Z", "2024-06-01T25:00:00Z", "2024-06-01T09:12:03+25:00",
     "01/06/2024", "2024-06-01T09:12:03.1234567890Z", "2024-06-01T09:12:03 Europe/Paris"],
)
def test_an_unparseable_timestamp_is_refused(webhook, sent):
    assert_rejected(webhook.post(identify(timestamp=sent)), 400, "Invalid timestamp")


def test_a_timestamp_more_than_24_hours_ahead_is_refused(webhook):
    ahead = timezone.now() + dt.timedelta(hours=24, minutes=5)
    response = webhook.post(identify(timestamp=ahead.isoformat()))
    assert_rejected(response, 400, "Timestamp is more than 24 hours in the future")


def test_a_timestamp_less_than_24_hours_ahead_is_accepted(webhook):
    ahead = timezone.now() + dt.timedelta(hours=23, minutes=55)
    assert webhook.post(identify(timestamp=ahead.isoformat())).status_code == 200


def test_old_timestamps_are_backfills_and_accepted(webhook):
    assert webhook.post(identify(timestamp="1999-12-31T23:59:59Z")).json()["day"] == "1999-12-31"


# Description and url ---------------------------------------------------------------------

DESCRIPTION_SOURCES = [
    ("page.url", lambda m: m.update(page={"url": "https://example.com/page"})),
    ("context.page.url", lambda m: m["context"].update(page={"url": "https://example.com/context"})),
    ("url", lambda m: m.update(url="https://example.com/top")),
    ("properties.url", lambda m: m["properties"].update(url="https://example.com/properties")),
    ("event", lambda m: m.update(event="User logged in")),
]
EXPECTED_DESCRIPTIONS = [
    "https://example.com/page",
    "https://example.com/context",
    "https://example.com/top",
    "https://example.com/properties",
    "User logged in",
]


@pytest.mark.parametrize("first", range(len(DESCRIPTION_SOURCES)), ids=[n for n, _ in DESCRIPTION_SOURCES])
def test_the_description_is_the_first_found_in_the_documented_order(webhook, first):
    message = identify(context={}, properties={})
    for _, put in DESCRIPTION_SOURCES[first:]:
        put(message)
    webhook.post(message)
    expected = EXPECTED_DESCRIPTIONS[first]
    assert interaction().description == expected
    assert interaction().url == (expected if expected.startswith("https") else "")


def test_without_url_or_event_the_description_is_the_standard_message(webhook):
    webhook.post(identify())
    assert (interaction().description, interaction().url) == (STANDARD_DESCRIPTION, "")


def test_the_description_is_cut_at_1000_characters(webhook):
    long_url = "https://example.com/" + "a" * 1500
    webhook.post(identify("a@example.com", page={"url": long_url}))
    webhook.post(identify("b@example.com", event="E" * 1500))
    assert interaction("a@example.com").description == long_url[:1000]
    assert interaction("a@example.com").url == long_url
    assert interaction("b@example.com").description == "E" * 1000


@pytest.mark.parametrize(
    "sent, kept",
    [
        ("https://example.com/a?b=c", True),
        ("http://example.com", True),
        ("HTTPS://Example.com/x", True),
        ("javascript:alert(1)", False),
        ("JavaScript:alert(document.cookie)", False),
        ("data:text/html,<script>alert(1)</script>", False),
        ("ftp://example.com/file", False),
        ("/relative/path", False),
        ("https://", False),
        ("https://exa mple.com", False),
    ],
)
def test_the_url_is_kept_only_when_it_is_http_or_https(webhook, sent, kept):
    webhook.post(identify(page={"url": sent}))
    assert interaction().description == sent
    assert interaction().url == (sent if kept else "")


# Day -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "zone, sent, day",
    [
        ("UTC", "2024-06-01T23:30:00Z", "2024-06-01"),
        ("Europe/Paris", "2024-06-01T23:30:00Z", "2024-06-02"),
        ("Europe/Paris", "2024-06-01T21:59:59Z", "2024-06-01"),
        ("America/Los_Angeles", "2024-06-02T03:00:00Z", "2024-06-01"),
        ("Asia/Tokyo", "2024-06-01T09:00:00-10:00", "2024-06-02"),
    ],
)
def test_the_day_is_the_date_in_the_workspace_timezone(webhook, workspace, zone, sent, day):
    workspace.timezone = zone
    workspace.save()
    assert webhook.post(identify(timestamp=sent)).json()["day"] == day
    assert interaction().day.isoformat() == day


# One interaction per day -------------------------------------------------------------------


def test_the_first_message_of_a_day_creates_and_later_ones_merge(webhook):
    first = webhook.post(identify(timestamp="2024-06-01T09:00:00Z", page={"url": "https://example.com/a"}))
    second = webhook.post(identify(timestamp="2024-06-01T15:00:00Z", page={"url": "https://example.com/b"}))
    third = webhook.post(identify(timestamp="2024-06-01T12:00:00Z"))
    assert [r.json()["status"] for r in (first, second, third)] == ["created", "merged", "merged"]
    row = interaction()
    assert row.event_count == 3
    assert row.occurred_at == at("2024-06-01T09:00:00")
    assert row.last_occurred_at == at("2024-06-01T15:00:00")
    assert row.description == "https://example.com/a"


def test_another_day_is_another_interaction(webhook):
    webhook.post(identify(timestamp="2024-06-01T09:00:00Z"))
    assert webhook.post(identify(timestamp="2024-06-02T09:00:00Z")).json()["status"] == "created"
    assert sorted(Interaction.objects.values_list("day", flat=True)) == [dt.date(2024, 6, 1), dt.date(2024, 6, 2)]


DAY_MESSAGES = [
    ("2024-06-01T10:00:00Z", {"page": {"url": "https://example.com/ten"}}),
    ("2024-06-01T08:30:00.5Z", {"event": "Signed in"}),
    ("2024-06-01T17:45:00+02:00", {}),
    ("2024-06-01T23:59:59.999Z", {"url": "https://example.com/late"}),
]


def deliver(webhook, messages, how):
    """Post messages one at a time, or all in one batch, or the first alone then the rest."""
    if how == "one by one":
        for message in messages:
            webhook.post(message)
    elif how == "one batch":
        webhook.post(messages)
    else:
        webhook.post(messages[0])
        webhook.post({"batch": messages[1:]})


DELIVERIES = ["one by one", "one batch", "first then batch"]


@pytest.mark.parametrize("how", DELIVERIES)
@pytest.mark.parametrize("order", list(itertools.permutations(range(len(DAY_MESSAGES)))), ids=str)
def test_the_earliest_message_defines_the_interaction_whatever_the_arrival_order(webhook, order, how):
    deliver(webhook, [identify(timestamp=DAY_MESSAGES[i][0], **DAY_MESSAGES[i][1]) for i in order], how)
    row = interaction()
    assert row.event_count == 4
    assert row.occurred_at == at("2024-06-01T08:30:00.500000")
    assert row.last_occurred_at == at("2024-06-01T23:59:59.999000")
    assert (row.description, row.url) == ("Signed in", "")


@pytest.mark.parametrize("how", DELIVERIES)
def test_a_batch_with_a_repeated_message_id_counts_it_once(webhook, how):
    message = identify(timestamp="2024-06-01T09:00:00Z")
    later = identify(timestamp="2024-06-01T10:00:00Z")
    deliver(webhook, [message, later, message, dict(message, timestamp="2024-06-01T08:00:00Z")], how)
    row = interaction()
    assert row.event_count == 2
    assert row.occurred_at == at("2024-06-01T09:00:00")


def test_messages_with_the_same_timestamp_give_the_same_interaction_in_any_order(webhook):
    a = dict(timestamp="2024-06-01T09:00:00Z", event="B event")
    b = dict(timestamp="2024-06-01T09:00:00Z", event="A event")
    webhook.post(identify("x@example.com", **a))
    webhook.post(identify("x@example.com", **b))
    webhook.post(identify("y@example.com", **b))
    webhook.post(identify("y@example.com", **a))
    assert interaction("x@example.com").description == interaction("y@example.com").description


def test_a_processed_message_id_changes_nothing(webhook):
    first = identify(timestamp="2024-06-01T09:00:00Z", traits={"email": "jane@example.com", "plan": "free"})
    webhook.post(first)
    replay = dict(first, timestamp="2024-05-01T09:00:00Z", traits={"email": "jane@example.com", "plan": "pro"})
    response = webhook.post(replay)
    assert response.status_code == 200
    assert response.json()["status"] == "duplicate"
    contact = Contact.objects.get()
    assert contact.traits["plan"] == "free"
    assert interaction().event_count == 1
    assert ProcessedMessage.objects.count() == 1


def test_a_message_id_is_per_workspace(webhook, client, other_workspace):
    message = identify()
    webhook.post(message)
    other = Webhook(client, api_key_for(other_workspace)).post(message)
    assert other.json()["status"] == "created"


def test_a_replayed_batch_is_all_duplicates(webhook):
    batch = [identify(f"u{i}@example.com") for i in range(5)]
    webhook.post(batch)
    replay = webhook.post(batch).json()
    assert [r["status"] for r in replay["results"]] == ["duplicate"] * 5
    assert sum(Interaction.objects.values_list("event_count", flat=True)) == 5


def test_a_message_without_message_id_is_deduplicated_by_its_content(webhook):
    message = without(identify(), "messageId")
    assert webhook.post(message).json()["status"] == "created"
    assert webhook.post(message).json()["status"] == "duplicate"
    assert webhook.post(dict(message, timestamp="2024-06-01T10:00:00Z")).json()["status"] == "merged"


# Closeness storage -----------------------------------------------------------------------------


def test_each_new_day_updates_closeness_log_and_the_last_day(webhook):
    days = [dt.date(2024, 6, 1), dt.date(2024, 5, 20), dt.date(2024, 6, 3)]
    for day in days:
        webhook.post(identify(timestamp=f"{day}T12:00:00Z"))
        webhook.post(identify(timestamp=f"{day}T13:00:00Z"))
    contact = Contact.objects.get()
    assert contact.closeness_log == pytest.approx(closeness.log_for_days(days), abs=1e-12)
    assert contact.last_interaction_day == dt.date(2024, 6, 3)
    assert contact.closeness_on(dt.date(2024, 6, 3)).strength == pytest.approx(
        closeness.strength_from_days(days, dt.date(2024, 6, 3))
    )


# Traits ----------------------------------------------------------------------------------------

TRAIT_MESSAGES = [
    ("2024-06-01T09:00:00Z", {"plan": "free", "firstName": "Jan", "company": "Initech", "seats": 1}),
    ("2024-06-03T09:00:00Z", {"plan": "pro", "first_name": "Jane", "lastName": "Doe"}),
    ("2024-06-02T09:00:00Z", {"plan": "trial", "seats": 5, "last_name": "Dough", "city": "Paris"}),
]


@pytest.mark.parametrize("how", DELIVERIES)
@pytest.mark.parametrize("order", list(itertools.permutations(range(len(TRAIT_MESSAGES)))), ids=str)
def test_traits_merge_newest_wins_per_key_whatever_the_arrival_order(webhook, order, how):
    messages = [
        identify(timestamp=TRAIT_MESSAGES[i][0], traits={"email": "jane@example.com", **TRAIT_MESSAGES[i][1]})
        for i in order
    ]
    deliver(webhook, messages, how)
    contact = Contact.objects.get()
    by_name = {k.lower().replace("_", ""): v for k, v in contact.traits.items()}
    assert by_name == {
        "email": "jane@example.com",
        "plan": "pro",
        "firstname": "Jane",
        "lastname": "Doe",
        "company": "Initech",
        "seats": 5,
        "city": "Paris",
    }
    assert len(contact.traits) == 7  # firstName and first_name are one trait
    assert contact.name == "Jane Doe"


def test_an_older_message_only_fills_missing_traits(webhook):
    webhook.post(identify(timestamp="2024-06-02T09:00:00Z", traits={"email": "jane@example.com", "plan": "pro"}))
    webhook.post(identify(timestamp="2024-06-01T09:00:00Z", traits={"email": "jane@example.com", "plan": "free", "city": "Oslo"}))
    assert Contact.objects.get().traits == {"email": "jane@example.com", "plan": "pro", "city": "Oslo"}


def test_the_name_comes_from_name_or_first_and_last_name(webhook):
    webhook.post(identify("a@example.com", traits={"email": "a@example.com", "name": "Ada Lovelace", "firstName": "X"}))
    webhook.post(identify("b@example.com", traits={"email": "b@example.com", "firstName": "Grace", "lastName": "Hopper"}))
    webhook.post(identify("c@example.com", traits={"email": "c@example.com", "first_name": "Alan"}))
    names = dict(Contact.objects.values_list("email", "name"))
    assert names == {"a@example.com": "Ada Lovelace", "b@example.com": "Grace Hopper", "c@example.com": "Alan"}


@pytest.mark.parametrize("user_id, kept", [("usr_8842", "usr_8842"), (12345, "12345"), ("  usr_1  ", "usr_1")])
def test_the_user_id_is_kept(webhook, user_id, kept):
    webhook.post(identify(userId=user_id))
    assert Contact.objects.get().user_id == kept


def test_the_newest_user_id_is_kept_whatever_the_order(webhook):
    webhook.post(identify(timestamp="2024-06-02T09:00:00Z", userId="new"))
    webhook.post(identify(timestamp="2024-06-01T09:00:00Z", userId="old"))
    assert Contact.objects.get().user_id == "new"


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_a_message_from_before_the_year_1000_is_older_than_this_century(webhook, order):
    messages = [
        identify(timestamp="0999-06-01T09:00:00Z", userId="ancient", traits={"email": "jane@example.com", "plan": "ancient"}),
        identify(timestamp="2024-06-01T09:00:00Z", userId="recent", traits={"email": "jane@example.com", "plan": "recent"}),
    ]
    for i in order:
        assert webhook.post(messages[i]).status_code == 200
    contact = Contact.objects.get()
    assert (contact.traits["plan"], contact.user_id) == ("recent", "recent")


def test_first_seen_is_the_earliest_timestamp(webhook):
    webhook.post(identify(timestamp="2024-06-02T09:00:00Z"))
    webhook.post(identify(timestamp="2024-05-01T09:00:00Z"))
    assert Contact.objects.get().first_seen_at == at("2024-05-01T09:00:00")


# Engage ----------------------------------------------------------------------------------------

PERSONAS = {"computation_class": "audience", "computation_key": "order_completed_last_30days"}


def test_an_engage_sync_creates_the_contact_but_no_interaction(webhook):
    message = identify(traits={"email": "jane@example.com", "order_completed_last_30days": True}, context={"personas": PERSONAS})
    response = webhook.post(message)
    assert response.json() == {"status": "traits_updated", "code": 200, "email": "jane@example.com"}
    contact = Contact.objects.get()
    assert contact.traits["order_completed_last_30days"] is True
    assert contact.closeness_log is None
    assert not Interaction.objects.exists()


def test_an_engage_sync_updates_traits_and_leaves_the_timeline_alone(webhook):
    webhook.post(identify(timestamp="2024-06-01T09:00:00Z"))
    before = Contact.objects.get().closeness_log
    webhook.post(identify(timestamp="2024-06-05T09:00:00Z", traits={"email": "jane@example.com", "vip": True}, context={"personas": PERSONAS}))
    contact = Contact.objects.get()
    assert contact.traits["vip"] is True
    assert contact.closeness_log == before
    assert contact.last_interaction_day == dt.date(2024, 6, 1)
    assert interaction().event_count == 1


# Delete ----------------------------------------------------------------------------------------


def test_a_delete_by_user_id_removes_the_contacts_and_their_interactions(webhook, other_workspace):
    webhook.post(identify("jane@example.com", userId="usr_8842"))
    webhook.post(identify("jane.work@example.com", userId="usr_8842"))
    webhook.post(identify("john@example.com", userId="usr_1"))
    outsider = ContactFactory(workspace=other_workspace, user_id="usr_8842")
    response = webhook.post({"type": "delete", "userId": "usr_8842", "messageId": "del-1", "context": [], "integrations": []})
    assert response.status_code == 200
    assert response.json()["status"] == "deleted"
    assert response.json()["deleted"] == 2
    assert set(Contact.objects.values_list("email", flat=True)) == {"john@example.com", outsider.email}
    assert list(Interaction.objects.values_list("contact__email", flat=True)) == ["john@example.com"]


def test_a_delete_by_email_removes_the_contact(webhook):
    webhook.post(identify("jane@example.com"))
    response = webhook.post({"type": "delete", "email": " JANE@example.com", "messageId": "del-2"})
    assert response.json()["status"] == "deleted"
    assert not Contact.objects.exists()
    assert not Interaction.objects.exists()


def test_a_delete_of_an_unknown_user_deletes_nothing(webhook):
    webhook.post(identify())
    response = webhook.post({"type": "delete", "userId": "nobody", "messageId": "del-3"})
    assert response.json()["deleted"] == 0
    assert Contact.objects.count() == 1


def test_a_delete_never_matches_contacts_by_an_empty_user_id(webhook):
    webhook.post(identify("jane@example.com"))
    webhook.post(identify("john@example.com"))
    response = webhook.post({"type": "delete", "userId": "", "email": "jane@example.com", "messageId": "del-4"})
    assert response.json()["deleted"] == 1
    assert list(Contact.objects.values_list("email", flat=True)) == ["john@example.com"]


def test_a_delete_without_user_id_or_email_is_400(webhook):
    assert webhook.post({"type": "delete", "context": []}).status_code == 400


# Types -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["track", "page", "screen", "group", "alias", "batch", "Track", "something"])
def test_other_types_are_501_saying_only_identify_is_accepted(webhook, kind):
    response = webhook.post(identify(type=kind))
    assert response.status_code == 501
    assert "Only identify" in response.json()["message"]
    assert not Contact.objects.exists()
    assert not ProcessedMessage.objects.exists()


def test_a_message_without_type_is_400(webhook):
    assert_rejected(webhook.post(without(identify(), "type")), 400, "Missing type")
    assert_rejected(webhook.post(identify(type="")), 400, "Missing type")


# Rejected messages log ---------------------------------------------------------------------


def test_rejected_messages_are_remembered_with_status_message_and_excerpt(webhook, workspace):
    webhook.post(identify(None, userId="usr_1"))
    webhook.post(identify(type="track"))
    webhook.post(identify())
    rows = list(RejectedMessage.objects.filter(workspace=workspace).order_by("id"))
    assert [(r.status, r.message) for r in rows] == [(400, "Missing email"), (501, rows[1].message)]
    assert "Only identify" in rows[1].message
    assert '"usr_1"' in rows[0].excerpt
    assert rows[0].received_at is not None


def test_the_excerpt_is_truncated(webhook):
    webhook.post(identify(type="track", properties={"long": "x" * 5000}))
    excerpt = RejectedMessage.objects.get().excerpt
    assert 100 < len(excerpt) <= 300
    assert excerpt.endswith("…")


def test_only_the_last_100_rejections_are_kept_per_workspace(webhook, workspace, client, other_workspace):
    Webhook(client, api_key_for(other_workspace)).post(identify(None, messageId="other"))
    webhook.post([identify(None, messageId=f"bad-{i}") for i in range(60)])
    webhook.post([identify(None, messageId=f"worse-{i}") for i in range(60)])
    kept = RejectedMessage.objects.filter(workspace=workspace)
    assert kept.count() == 100
    excerpts = " ".join(kept.values_list("excerpt", flat=True))
    assert "worse-59" in excerpts and "bad-59" in excerpts and "bad-19" not in excerpts
    assert RejectedMessage.objects.filter(workspace=other_workspace).count() == 1


def test_a_whole_request_refused_after_authentication_is_remembered(webhook):
    webhook.post(None, raw=b"{not json")
    webhook.post(identify(), content_type="text/plain")
    rows = list(RejectedMessage.objects.order_by("id").values_list("status", "excerpt"))
    assert rows[0] == (400, "{not json")
    assert rows[1][0] == 415


def test_accepted_messages_are_not_remembered_as_rejected(webhook):
    webhook.post([identify("a@example.com"), identify("b@example.com")])
    assert not RejectedMessage.objects.exists()
