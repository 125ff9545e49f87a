"""The bulk replay's messages are the producer's: same key, same JSON but number notation."""

import math
from datetime import UTC, datetime

import pytest

from fraud_assets.core.contracts import AUDITED_TRANSACTIONS_SCHEMA
from fraud_assets.core.replay import _row_index_slices, audited_facts, transaction_messages
from fraud_assets.kafka.producer import encode_message, transaction_message
from fraud_assets_tests.kafka_fixtures import audited_rows, write_audited_table
from fraud_assets_tests.messages import assert_same_message, number_tokens

AWKWARD_NUMBERS = [0.0005, 1e-05, -1.234e-07, 12345678.0, 1e16, -0.0, 2.82879384806159e17, 0.001]
"""Numbers Java and Python print differently (notation, or JDK 17's longer digits)."""


def awkward_rows():
    rows = audited_rows(30)
    for index, number in enumerate(AWKWARD_NUMBERS):
        rows[index]["V7"] = number
    rows[10]["Class"] = None  # the label is optional: left out of the message
    rows[11]["V3"] = None  # a missing number is sent as null (the stream dead-letters it)
    rows[12]["event_time"] = datetime(2013, 9, 1, 0, 0, 1, 250, tzinfo=UTC)
    rows[13]["event_time"] = datetime(2013, 9, 1, 0, 0, 2, 500000, tzinfo=UTC)
    return rows


def spark_messages(spark, rows):
    frame = spark.createDataFrame(rows, AUDITED_TRANSACTIONS_SCHEMA)
    return {r["key"]: r for r in transaction_messages(frame).collect()}


def test_each_message_equals_the_producers_but_for_number_notation(spark):
    rows = awkward_rows()
    messages = spark_messages(spark, rows)
    assert len(messages) == len(rows)
    identical = 0
    for row in rows:
        key, value = encode_message(transaction_message(row))
        message = messages[key.decode()]
        assert message["row_index"] == row["row_index"]
        sent = message["value"].encode("utf-8")
        assert_same_message(value, sent)
        identical += sent == value
        # Where no number needs an exponent in either language, the bytes are the same.
        if all(1e-3 <= abs(float(t)) < 1e7 or float(t) == 0 for t in number_tokens(sent.decode())):
            assert sent == value
    assert identical >= len(rows) - len(AWKWARD_NUMBERS)


def test_the_label_is_left_out_when_unknown_and_times_keep_their_microseconds(spark):
    rows = awkward_rows()
    messages = spark_messages(spark, rows)
    assert '"Class"' not in messages["tx-000010"]["value"]
    assert '"V3":null' in messages["tx-000011"]["value"]
    assert '"event_time":"2013-09-01T00:00:01.000250Z"' in messages["tx-000012"]["value"]
    assert '"event_time":"2013-09-01T00:00:02.500000Z"' in messages["tx-000013"]["value"]
    assert '"event_time":"2013-09-01T00:00:00Z"' in messages["tx-000000"]["value"]


@pytest.mark.parametrize(
    ("field", "value", "refused"),
    [
        ("V1", math.nan, True),
        ("Amount", math.inf, True),
        ("Time", -math.inf, True),
        ("transaction_id", "", True),
        ("V2", None, False),  # sent as null, as the producer does
        ("V2", 1.5, False),
    ],
)
def test_rows_the_producer_refuses_are_refused(tmp_path, field, value, refused):
    rows = audited_rows(3)
    rows[1][field] = value
    table = write_audited_table(tmp_path / "audited_transactions", rows)
    assert audited_facts(table) == (3, int(refused), 0, 2)
    row = rows[1]
    if refused:
        with pytest.raises(ValueError):
            transaction_message(row)
    else:
        transaction_message(row)


def test_slices_cover_the_row_index_range_once_in_order():
    slices = _row_index_slices(0, 284_806, 283_726, 50_000)
    assert slices[0][0] == 0 and slices[-1][1] == 284_806
    assert all(b[0] == a[1] + 1 for a, b in zip(slices, slices[1:], strict=False))
    assert len(slices) == 6
    assert _row_index_slices(5, 5, 1, 50_000) == [(5, 5)]
    assert _row_index_slices(None, None, 0, 50_000) == []
