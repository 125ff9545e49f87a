"""The benchmark's backlog: the real dataset, replayed under fresh ids to a million messages.

Every audited transaction is encoded once with the producer's own
:func:`~fraud_assets.kafka.producer.transaction_message` and
:func:`~fraud_assets.kafka.producer.encode_message` (the ``transactions`` contract), then
copied under new ids (``c<k>-<transaction_id>``: the id is the message's first field, so a
copy is the same bytes with another id), enough copies for :data:`MIN_BACKLOG` messages.
The slice topic holds copy 0 alone (one replay of the dataset), for the pipelines that would
take minutes over the whole backlog.

What every pipeline must alert on is batch scoring of the audited table, under the copies'
ids (:func:`copied_ids`).
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass

from fraud_assets.bench import generator
from fraud_assets.kafka.producer import encode_message, transaction_message

MIN_BACKLOG = 1_000_000
"""Messages the sustained throughput is measured on (at least)."""


def copy_id(copy: int, transaction_id: str) -> str:
    """The id of ``transaction_id`` in copy ``copy`` of the dataset."""
    return f"c{copy}-{transaction_id}"


def copied_ids(ids: Iterable[str], copies: int) -> set[str]:
    """``ids`` under the id of each copy."""
    ids = list(ids)
    return {copy_id(k, t) for k in range(copies) for t in ids}


def copies_for(rows: int, minimum: int = MIN_BACKLOG) -> int:
    """How many copies of ``rows`` messages make at least ``minimum``."""
    return max(1, math.ceil(minimum / max(rows, 1)))


def encode_copies(rows: list[dict], copies: int) -> list[generator.Message]:
    """``(key, value)`` of every row under every copy's id, copy after copy."""
    encoded = [encode_message(transaction_message(row)) for row in rows]
    messages: list[generator.Message] = []
    for copy in range(copies):
        for key, value in encoded:
            old = b'{"transaction_id":"' + key + b'"'
            if not value.startswith(old):
                raise ValueError(f"message {key!r} does not start with its id: {value[:60]!r}")
            new_key = copy_id(copy, key.decode()).encode()
            messages.append((new_key, b'{"transaction_id":"' + new_key + b'"' + value[len(old) :]))
    return messages


@dataclass(frozen=True)
class Backlog:
    """The loaded backlog: its topics, sizes and the alert ids expected on each."""

    topic: str
    slice_topic: str
    copies: int
    messages: int
    slice_messages: int
    expected: set[str]
    slice_expected: set[str]
    generator_tps: float
