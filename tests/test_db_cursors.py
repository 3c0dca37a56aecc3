"""natsite.db.prepared_cursor on PostgreSQL: a cursor kept per connection for each
statement and handed out again, never to two users at once, reading what Django's own
cursors read."""

import datetime as dt

import pytest
from django.db import connection

from contacts.models import Contact
from natsite.db import KEPT_STATEMENTS, prepared_cursor

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def psycopg_cursor(wrapper):
    return wrapper.cursor


def test_the_same_cursor_serves_one_statement_after_another():
    with prepared_cursor() as first:
        first.execute("SELECT %s::int", [1])
        assert first.fetchall() == [(1,)]
    with prepared_cursor() as second:
        second.execute("SELECT %s::int", [2])
        assert second.fetchall() == [(2,)]

    assert psycopg_cursor(first) is psycopg_cursor(second)
    assert not psycopg_cursor(second).closed


def test_each_statement_has_a_kept_cursor_of_its_own():
    lookup, write = "SELECT %s::int + 1", "SELECT %s::text || 'x'"
    seen = []
    for turn in range(3):
        with prepared_cursor() as cursor:
            cursor.execute(lookup, [turn])
            assert cursor.fetchall() == [(turn + 1,)]
            looked_up_on = psycopg_cursor(cursor)
            cursor.execute(write, [str(turn)])
            assert cursor.fetchall() == [(f"{turn}x",)]
            seen.append((looked_up_on, psycopg_cursor(cursor)))

    assert len({lookup_cursor for lookup_cursor, _ in seen}) == 1
    assert len({write_cursor for _, write_cursor in seen}) == 1
    assert seen[0][0] is not seen[0][1]
    assert not seen[0][0].closed and not seen[0][1].closed


def test_the_kept_cursors_are_bounded_and_those_let_go_are_closed():
    with prepared_cursor() as cursor:
        cursor.execute("SELECT %s::int", [0])
        first = psycopg_cursor(cursor)
    for number in range(1, KEPT_STATEMENTS + 1):
        with prepared_cursor() as cursor:
            cursor.execute(f"SELECT %s::int + {number}", [0])
            assert cursor.fetchall() == [(number,)]

    assert first.closed
    with prepared_cursor() as again:
        again.execute("SELECT %s::int", [5])
        assert again.fetchall() == [(5,)]
    assert psycopg_cursor(again) is not first


def test_a_statement_planned_each_time_has_its_own_kept_cursor():
    with prepared_cursor() as prepared:
        prepared.execute("SELECT 1")
    with prepared_cursor(prepare=False) as planned:
        planned.execute("SELECT 1")
    with prepared_cursor(prepare=False) as planned_again:
        planned_again.execute("SELECT 1")

    assert psycopg_cursor(planned) is not psycopg_cursor(prepared)
    assert psycopg_cursor(planned_again) is psycopg_cursor(planned)


def test_a_cursor_asked_for_while_the_kept_one_is_in_use_is_another_and_closes():
    with prepared_cursor() as outer:
        outer.execute("SELECT generate_series(1, 3)")
        with prepared_cursor() as inner:
            inner.execute("SELECT %s::text", ["inner"])
            assert inner.fetchall() == [("inner",)]
        # the outer cursor's rows are still its own
        assert outer.fetchall() == [(1,), (2,), (3,)]

    assert psycopg_cursor(inner) is not psycopg_cursor(outer)
    assert psycopg_cursor(inner).closed
    with prepared_cursor() as after:
        after.execute("SELECT generate_series(1, 3)")
    assert psycopg_cursor(after) is psycopg_cursor(outer)


def test_an_error_in_the_block_hands_the_cursor_back():
    with pytest.raises(ZeroDivisionError):
        with prepared_cursor() as failed:
            failed.execute("SELECT 1")
            1 / 0
    with prepared_cursor() as next_one:
        next_one.execute("SELECT 1")

    assert psycopg_cursor(next_one) is psycopg_cursor(failed)


def test_times_read_through_it_are_the_ones_django_reads(workspace):
    seen = dt.datetime(2024, 6, 1, 9, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    contact = Contact.objects.create(workspace=workspace, email="jane@example.com", first_seen_at=seen)

    with prepared_cursor() as cursor:
        cursor.execute("SELECT first_seen_at, created_at FROM contacts_contact WHERE id = %s", [contact.pk])
        ((first_seen_at, created_at),) = cursor.fetchall()

    orm = Contact.objects.values_list("first_seen_at", "created_at").get(pk=contact.pk)
    assert (first_seen_at, created_at) == orm
    assert first_seen_at == seen
    assert first_seen_at.tzinfo is orm[0].tzinfo is dt.timezone.utc


@pytest.mark.django_db(transaction=True)  # closes the connection: outside a test transaction
def test_a_new_connection_gets_a_new_cursor():
    with prepared_cursor() as before:
        before.execute("SELECT 1")
    connection.close()

    with prepared_cursor() as after:
        after.execute("SELECT %s::int", [7])
        assert after.fetchall() == [(7,)]

    assert psycopg_cursor(after) is not psycopg_cursor(before)
