"""An outside client: kcat (librdkafka, Debian package ``kcat``) writes the transactions and
reads ``fraud_alerts``; the stream must understand the one and produce valid JSON for the
other, with the documented alert fields."""

import json
import shutil
import subprocess

import pytest

from fraud_assets.core.contracts import ALERT_SCHEMA, field_names
from fraud_assets.core.paths import StreamPaths
from fraud_assets.core.queries import await_query
from fraud_assets.core.reconcile import expected_alert_ids
from fraud_assets.core.registry import Promotion
from fraud_assets.core.settings import KafkaSettings, Topics
from fraud_assets.core.stream import ScoringBatchWriter, StreamSettings, start_scoring_query
from fraud_assets.kafka.producer import encode_message, transaction_message
from fraud_assets_tests.factories import audited_df, separable_model, separable_transactions

pytestmark = pytest.mark.integration

PROMOTION = Promotion("kcat-lr", 0.5, "fixed", "2026-01-01T00:00:00+00:00")


def kcat_binary() -> str:
    """The kcat program; its absence fails the test, as for the UI and compose tests."""
    binary = shutil.which("kcat")
    if binary is None:
        pytest.fail(
            "kcat is not installed, so the outside-client test cannot run: "
            "run make setup-system (Debian package kcat)"
        )
    return binary


def kcat(*args: str, stdin: bytes | None = None) -> bytes:
    """Run kcat to completion (it exits by itself: -P at end of input, -C with -e)."""
    completed = subprocess.run(
        [kcat_binary(), *args], input=stdin, capture_output=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")
    return completed.stdout


def test_kcat_produced_transactions_give_alerts_kcat_reads_as_json(
    spark, kafka_broker, unique_topics, tmp_path
):
    kcat_binary()  # before any broker or Spark work
    topics = Topics(
        transactions=unique_topics(partitions=2, prefix="kcat-tx"),
        alerts=unique_topics(partitions=1, prefix="kcat-alerts"),
        dead_letter=unique_topics(partitions=1, prefix="kcat-dlq"),
        kpi_partials=unique_topics(partitions=1, prefix="kcat-partials"),
    )
    kafka = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers, topics=topics)
    rows = separable_transactions(120)
    lines = []
    for row in rows:
        key, value = encode_message(transaction_message(row))
        assert b"|" not in value and b"\n" not in value
        lines.append(key + b"|" + value)
    # -K sets the key delimiter; kcat reads one message per line from stdin.
    input_file = tmp_path / "transactions.txt"
    input_file.write_bytes(b"\n".join(lines) + b"\n")
    kcat("-P", "-b", kafka.bootstrap_servers, "-t", topics.transactions, "-K", "|",
         "-l", str(input_file))  # fmt: skip

    paths = StreamPaths.under(tmp_path / "tables", tmp_path / "checkpoints")
    model = separable_model(spark)
    writer = ScoringBatchWriter(spark, kafka, paths, model, PROMOTION)
    await_query(start_scoring_query(spark, kafka, paths, writer, StreamSettings(), bounded=True))
    writer.wait_for_delivery()  # the last batch's outputs follow its ledger commit
    assert writer.totals.scored == len(rows)
    assert writer.totals.invalid == 0

    output = kcat(
        "-C", "-b", kafka.bootstrap_servers, "-t", topics.alerts, "-e", "-o", "beginning",
        "-f", "%k|%s\n", "-q",
    )  # fmt: skip
    alerts = []
    for line in output.decode("utf-8").splitlines():
        key, separator, value = line.partition("|")
        assert separator, line
        alert = json.loads(value)
        assert key == alert["transaction_id"]
        alerts.append(alert)

    expected = expected_alert_ids(model, audited_df(spark, rows), PROMOTION)
    assert expected, "the separable model alerts on its frauds"
    assert sorted(a["transaction_id"] for a in alerts) == sorted(expected)
    assert {a["alert_id"] for a in alerts} == {f"{PROMOTION.version}:{t}" for t in expected}
    for alert in alerts:
        assert set(alert) == set(field_names(ALERT_SCHEMA)), alert
        assert alert["model_version"] == PROMOTION.version
        assert alert["threshold"] == PROMOTION.threshold
        assert alert["is_alert"] is True and alert["prediction"] == 1
        assert PROMOTION.threshold <= alert["fraud_prob"] <= 1.0
        assert isinstance(alert["Amount"], float) and alert["Class"] in (0, 1)
        for name in ("event_time", "scored_at"):
            assert isinstance(alert[name], str) and alert[name][:4].isdigit(), alert[name]
