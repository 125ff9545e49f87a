import argparse
import json
import time

import pytest

from fraud_assets.errors import OperatorError
from fraud_assets.kafka.admin import ADMIN_TIMEOUT_S, REACHABILITY_TIMEOUT_S
from fraud_assets.kafka.cli import produce_command
from fraud_assets.kafka.io import read_topic
from fraud_assets.kafka.producer import ReplayError, replay, transaction_message
from fraud_assets_tests.kafka_fixtures import audited_rows, write_audited_table

pytestmark = pytest.mark.integration


def test_replay_sends_exactly_the_audited_rows(kafka_broker, unique_topics, tmp_path):
    rows = audited_rows(40)
    table = write_audited_table(tmp_path / "audited_transactions", rows, files=3)
    topic = unique_topics(partitions=2)

    result = replay(table, kafka_broker.bootstrap_servers, topic, progress=False)

    assert result.sent == 40 and result.seconds > 0 and result.rate_tps > 0
    records = read_topic(kafka_broker.bootstrap_servers, topic, timeout_s=30)
    assert sorted(r.key.decode() for r in records) == [row["transaction_id"] for row in rows]
    by_id = {row["transaction_id"]: row for row in rows}
    for record in records:
        assert json.loads(record.value) == transaction_message(by_id[record.key.decode()])
    # Within a partition, transactions keep their source order.
    for partition in (0, 1):
        ids = [r.key.decode() for r in records if r.partition == partition]
        assert ids == sorted(ids)


def test_replay_of_selected_ids_with_a_limit(kafka_broker, unique_topics, tmp_path):
    table = write_audited_table(tmp_path / "audited_transactions", audited_rows(30))
    topic = unique_topics(partitions=2)
    wanted = {"tx-000002", "tx-000005", "tx-000017", "tx-000021"}

    result = replay(
        table,
        kafka_broker.bootstrap_servers,
        topic,
        transaction_ids=wanted,
        limit=3,
        progress=False,
    )

    assert result.sent == 3
    keys = {r.key.decode() for r in read_topic(kafka_broker.bootstrap_servers, topic)}
    assert keys == {"tx-000002", "tx-000005", "tx-000017"}


def test_replay_respects_the_rate(kafka_broker, unique_topics, tmp_path):
    table = write_audited_table(tmp_path / "audited_transactions", audited_rows(40))
    topic = unique_topics(partitions=1)

    result = replay(table, kafka_broker.bootstrap_servers, topic, rate=80.0, progress=False)

    # 40 sends at 80/s with a burst of 8: at least (40 - 8) / 80 = 0.4 s.
    assert result.sent == 40
    assert result.seconds >= 0.38
    assert result.rate_tps < 110


FAIL_FAST_MARGIN_S = 5.0
"""What a refused replay may take past its timeouts: closing the admin clients and building
the error, on a loaded 2-core machine. Kept well below kafka-python's own 30 s waits, so a
check that does not pass its timeout on still fails, and so does a hang."""


def test_replay_to_a_missing_topic_fails_without_sending(kafka_broker, tmp_path):
    table = write_audited_table(tmp_path / "audited_transactions", audited_rows(3))
    started = time.monotonic()
    with pytest.raises(ReplayError, match="does not exist"):
        replay(table, kafka_broker.bootstrap_servers, "no-such-topic-xyz", progress=False)
    # replay() checks reachability, then lists the topics, each with its default timeout.
    bound = REACHABILITY_TIMEOUT_S + ADMIN_TIMEOUT_S + FAIL_FAST_MARGIN_S
    assert time.monotonic() - started < bound


def produce_args(home, **overrides) -> argparse.Namespace:
    values = {
        "home": str(home),
        "verbose": False,
        "bootstrap_servers": None,
        "topic": None,
        "limit": None,
        "rate": 0.0,
        "no_progress": True,
        "method": "kafka-python",
    }
    values.update(overrides)
    return argparse.Namespace(**values)


def test_produce_command_replays_the_home_table(kafka_broker, unique_topics, tmp_path, capsys):
    home = tmp_path / "home"
    write_audited_table(home / "var" / "tables" / "audited_transactions", audited_rows(12))
    topic = unique_topics(partitions=2)
    args = produce_args(
        home, bootstrap_servers=kafka_broker.bootstrap_servers, topic=topic, limit=5
    )

    assert produce_command(args) == 0

    assert "Sent 5 transactions" in capsys.readouterr().out
    keys = sorted(r.key.decode() for r in read_topic(kafka_broker.bootstrap_servers, topic))
    assert keys == [f"tx-{i:06d}" for i in range(5)]


@pytest.mark.parametrize("paced", [{"rate": 50.0}, {"limit": 5}])
def test_produce_with_spark_sends_the_whole_table_unpaced(tmp_path, paced):
    home = tmp_path / "home"
    write_audited_table(home / "var" / "tables" / "audited_transactions", audited_rows(3))
    with pytest.raises(OperatorError, match="--method spark sends the whole table unpaced"):
        produce_command(produce_args(home, method="spark", **paced))


def test_produce_command_without_an_audit_says_what_to_run(tmp_path):
    with pytest.raises(OperatorError, match="run the audit first: `make demo`"):
        produce_command(produce_args(tmp_path))
