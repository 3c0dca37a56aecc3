"""Recording import_events' chunks on two PostgreSQL connections at once.

A chunk's messages are split in two by contact (their email): the command's own thread
records one half while a helper thread, on a connection of its own, records the other,
each through record_messages. The halves touch disjoint contacts, interactions and
messageIds, so neither waits for the other, and each contact's messages are still
recorded in their order: the outcome is the one of recording the chunk one message at a
time, as everything about a message's outcome (its day new or not, traits, closeness)
depends on its contact's messages alone. The next chunk starts once both halves are
committed, so chunks stay in order too.

A chunk is recorded whole, on one connection, when splitting it could change that: it
holds a delete request (which may match contacts of either half by userId), or a
messageId in both halves (which copy counts first depends on their order).
"""

from concurrent.futures import ThreadPoolExecutor, wait

from django.db import DEFAULT_DB_ALIAS, connections

from ingest.services import Checked, Result, record_checked, record_messages

# Below this many valid messages a chunk is recorded whole: a thread hand-over and a
# second transaction cost more than half of a small chunk saves.
MIN_SPLIT = 200


def can_record_in_parallel() -> bool:
    """PostgreSQL, outside a transaction: a second connection would not see the rows of
    a transaction still open on this one (a workspace a test has just made, say)."""
    db = connections[DEFAULT_DB_ALIAS]
    return db.vendor == "postgresql" and not db.in_atomic_block


def split_by_contact(messages) -> tuple[list[int], list[int]] | None:
    """The positions of the messages of each half, or None when the chunk must be
    recorded whole."""
    if len(messages) < MIN_SPLIT:
        return None
    halves = ([], [])
    ids = (set(), set())
    for position, message in enumerate(messages):
        if message.type == "delete":
            return None
        half = hash(message.email) & 1
        halves[half].append(position)
        ids[half].add(message.message_id)
    if not halves[0] or not halves[1] or not ids[0].isdisjoint(ids[1]):
        return None
    return halves


class TwoConnectionRecorder:
    """record(checked) as record_checked does, one chunk after another, each split
    between this thread and a helper thread when it can be (and `split` allows it).
    close() ends the helper and its connection."""

    def __init__(self, workspace, split=True):
        self.workspace = workspace
        self.split = split
        self.helper = None

    def record(self, checked: Checked) -> list[Result]:
        return record_checked(workspace=self.workspace, checked=checked, record=self._record_valid)

    def _record_valid(self, *, workspace, messages) -> list[Result]:
        """record_messages, over two connections when the messages can be split."""
        halves = split_by_contact(messages) if self.split else None
        if halves is None:
            return record_messages(workspace=workspace, messages=messages)
        mine, theirs = ([messages[position] for position in half] for half in halves)
        if self.helper is None:
            self.helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="import-helper")
        pending = self.helper.submit(record_messages, workspace=workspace, messages=theirs)
        try:
            my_results = record_messages(workspace=workspace, messages=mine)
        except BaseException:
            wait([pending])  # both halves end before anything else happens
            raise
        recorded: list[Result | None] = [None] * len(messages)
        for half, results in zip(halves, (my_results, pending.result())):
            for position, result in zip(half, results):
                recorded[position] = result
        return recorded

    def close(self) -> None:
        if self.helper is None:
            return
        self.helper.submit(connections.close_all)  # runs in the helper: its own connections
        self.helper.shutdown(wait=True)
        self.helper = None
