import socket
import time

import pytest

from fraud_assets.core.settings import KafkaSettings, Topics
from fraud_assets.kafka.admin import (
    REACHABILITY_TIMEOUT_S,
    BrokerUnreachableError,
    TopicSpec,
    check_broker_reachable,
    parse_bootstrap_servers,
    project_topics,
)
from fraud_assets.kafka.broker import free_port
from fraud_assets.kafka.producer import ReplayError, read_audited_rows, replay
from fraud_assets_tests.kafka_fixtures import audited_rows, write_audited_table


def test_project_topics_use_configured_names_and_partitions():
    settings = KafkaSettings(
        topics=Topics(
            transactions="tx", alerts="al", dead_letter="dl", kpis="kp", kpi_partials="pa"
        ),
        transactions_partitions=4,
    )
    assert project_topics(settings) == [
        TopicSpec("tx", partitions=4),
        TopicSpec("al", partitions=1),
        TopicSpec("dl", partitions=1),
        TopicSpec("kp", partitions=1),
        TopicSpec("pa", partitions=1),
    ]


def test_transactions_topic_has_at_least_two_partitions():
    specs = project_topics(KafkaSettings(transactions_partitions=1))
    assert specs[0].name == "transactions" and specs[0].partitions == 2


def test_parse_bootstrap_servers():
    assert parse_bootstrap_servers("a:1, b:2") == [("a", 1), ("b", 2)]
    with pytest.raises(ValueError, match="host:port"):
        parse_bootstrap_servers("localhost")


FAIL_FAST_MARGIN_S = 5.0
"""What a reachability check may take past its own timeout: the metadata request gets at
least 1 s even when the TCP probe used the budget, then kafka-python's client is closed, on a
loaded 2-core machine. Kept well below kafka-python's own 30 s request timeout, so a check
that does not pass its timeout on to the client still fails, and so does a hang."""

NOT_KAFKA_TIMEOUT_S = 3.0
"""The timeout given to the check against a listener that never answers Kafka's protocol."""


def closed_port() -> int:
    port = free_port()
    with socket.socket() as probe:  # nothing listens there
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return port


def test_unreachable_broker_fails_within_its_timeout_with_advice():
    port = closed_port()
    started = time.monotonic()
    with pytest.raises(BrokerUnreachableError) as error:
        check_broker_reachable(f"127.0.0.1:{port}")
    assert time.monotonic() - started < REACHABILITY_TIMEOUT_S + FAIL_FAST_MARGIN_S
    message = str(error.value)
    assert f"Kafka is not reachable at 127.0.0.1:{port}" in message
    assert "fraud-assets kafka start" in message
    assert "FRAUD_KAFKA_BOOTSTRAP_SERVERS" in message


def test_a_listener_that_is_not_kafka_is_unreachable_too():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(BrokerUnreachableError, match="metadata"):
            check_broker_reachable(f"127.0.0.1:{port}", timeout_s=NOT_KAFKA_TIMEOUT_S)
        assert time.monotonic() - started < NOT_KAFKA_TIMEOUT_S + FAIL_FAST_MARGIN_S


def test_replay_to_unreachable_broker_fails_fast(tmp_path):
    table = write_audited_table(tmp_path / "audited", audited_rows(3))
    started = time.monotonic()
    with pytest.raises(BrokerUnreachableError):
        replay(table, f"127.0.0.1:{closed_port()}", "transactions", progress=False)
    # replay() checks reachability first, with the default timeout.
    assert time.monotonic() - started < REACHABILITY_TIMEOUT_S + FAIL_FAST_MARGIN_S


def test_audited_rows_come_in_row_index_order(tmp_path):
    rows = audited_rows(25)
    table = write_audited_table(tmp_path / "audited", rows, files=3)
    count, read = read_audited_rows(table)
    read = list(read)
    assert count == 25
    assert [r["row_index"] for r in read] == list(range(25))
    assert read[7] == rows[7]


def test_audited_rows_filter_then_limit(tmp_path):
    table = write_audited_table(tmp_path / "audited", audited_rows(30))
    wanted = {"tx-000029", "tx-000003", "tx-000010", "tx-000011", "not-there"}
    count, read = read_audited_rows(table, transaction_ids=wanted, limit=3)
    assert count == 3
    assert [r["transaction_id"] for r in read] == ["tx-000003", "tx-000010", "tx-000011"]


def test_missing_or_wrong_table_is_a_replay_error(tmp_path):
    with pytest.raises(ReplayError, match="does not exist"):
        read_audited_rows(tmp_path / "nowhere")
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "other").mkdir()
    pq.write_table(pa.table({"x": [1]}), tmp_path / "other" / "part-0.parquet")
    with pytest.raises(ReplayError, match="not an audited transactions table"):
        read_audited_rows(tmp_path / "other")
