"""Segment messages for tests, shaped like what Segment's libraries send."""

import itertools

_ids = itertools.count(1)


def identify(address="jane@example.com", timestamp="2024-06-01T09:00:00Z", **fields):
    """An identify in the recommended format, with a fresh messageId unless given."""
    message = {
        "type": "identify",
        "messageId": f"test-{next(_ids)}",
        "timestamp": timestamp,
        "traits": {"email": address},
    }
    message.update(fields)
    return message


def without(message, *keys):
    return {k: v for k, v in message.items() if k not in keys}
