import json
from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fraud_assets.core.contracts import PCA_COLUMNS, TRANSACTION_MESSAGE_SCHEMA, field_names
from fraud_assets.kafka.producer import (
    MESSAGE_FIELDS,
    encode_message,
    format_event_time,
    transaction_message,
)
from fraud_assets_tests.kafka_fixtures import audited_rows


def test_message_has_the_contract_fields_in_order():
    row = audited_rows(1, start=3)[0]
    message = transaction_message(row)
    expected = ["transaction_id", "event_time", "Time", *PCA_COLUMNS, "Amount", "Class"]
    assert list(message) == expected
    assert list(message) == list(MESSAGE_FIELDS)
    # The Spark parser of the stream reads exactly these fields.
    assert list(message) == field_names(TRANSACTION_MESSAGE_SCHEMA)
    assert message["transaction_id"] == "tx-000003"
    assert message["Class"] == 0 and type(message["Class"]) is int
    assert all(type(message[name]) is float for name in ("Time", *PCA_COLUMNS, "Amount"))


def test_row_index_and_unknown_columns_are_not_sent():
    row = {**audited_rows(1)[0], "extra": "ignored"}
    assert "row_index" not in transaction_message(row)
    assert "extra" not in transaction_message(row)


def test_event_time_is_iso_utc_with_z():
    base = datetime(2013, 9, 1, tzinfo=UTC)
    assert format_event_time(base + timedelta(seconds=406)) == "2013-09-01T00:06:46Z"
    assert format_event_time(base + timedelta(microseconds=250)) == "2013-09-01T00:00:00.000250Z"
    paris = timezone(timedelta(hours=2))
    assert format_event_time(datetime(2013, 9, 1, 2, 0, 5, tzinfo=paris)) == "2013-09-01T00:00:05Z"
    stamp = pd.Timestamp("2013-09-02 10:00:01.5", tz="UTC")
    assert format_event_time(stamp) == "2013-09-02T10:00:01.500000Z"


def test_naive_event_time_is_rejected():
    with pytest.raises(ValueError, match="time-zone aware"):
        format_event_time(datetime(2013, 9, 1))


def test_nan_amount_is_rejected_rather_than_sent_as_invalid_json():
    row = {**audited_rows(1)[0], "Amount": float("nan")}
    with pytest.raises(ValueError, match="Amount"):
        transaction_message(row)


def test_missing_label_is_left_out():
    row = {**audited_rows(1)[0], "Class": None}
    message = transaction_message(row)
    assert "Class" not in message
    assert list(message)[-1] == "Amount"


def test_numpy_values_become_plain_json_numbers():
    import numpy as np

    row = {**audited_rows(1)[0], "Amount": np.float64(12.5), "Class": np.int32(1)}
    key, value = encode_message(transaction_message(row))
    decoded = json.loads(value)
    assert decoded["Amount"] == 12.5 and decoded["Class"] == 1


def test_encoding_is_compact_json_keyed_by_transaction_id():
    message = transaction_message(audited_rows(1, start=42)[0])
    key, value = encode_message(message)
    assert key == b"tx-000042"
    assert b" " not in value
    assert json.loads(value) == message


@given(
    amount=st.floats(allow_nan=False, allow_infinity=False),
    v1=st.floats(allow_nan=False, allow_infinity=False, width=64),
)
def test_floats_round_trip_exactly(amount, v1):
    row = {**audited_rows(1)[0], "Amount": amount, "V1": v1}
    _, value = encode_message(transaction_message(row))
    decoded = json.loads(value)
    # repr equality: same double, sign of zero included.
    assert repr(decoded["Amount"]) == repr(amount)
    assert repr(decoded["V1"]) == repr(v1)
