"""The alerts audit on the real broker: Kafka fraud_alerts against the Parquet alerts table."""

import dagster as dg
import pytest

from fraud_assets.core.contracts import ALERT_SCHEMA
from fraud_assets.core.registry import write_json_atomic
from fraud_assets.core.scoring import alert_kafka_records
from fraud_assets.core.settings import KafkaSettings, Topics
from fraud_assets.core.sinks import commit_batch_partition, write_kafka
from fraud_assets.defs.audits import alerts_audit
from fraud_assets.defs.resources import KafkaResource, ProjectResource, SparkResource
from fraud_assets.kafka.io import produce_messages
from fraud_assets_tests.conftest import REPO_ROOT
from fraud_assets_tests.unit.test_digest import alert_row

pytestmark = pytest.mark.integration


def commit_batch(spark, project, batch_id, indexes, logged=True):
    """Commit alerts as the stream does; ``logged``: the batch finished (its log exists)."""
    paths = project.stream_paths
    rows = [alert_row(index, float(index), index % 2, batch_id) for index in indexes]
    folder, _ = commit_batch_partition(
        spark.createDataFrame(rows, ALERT_SCHEMA), paths.alerts_table, batch_id
    )
    if logged:
        write_json_atomic(paths.batch_log_dir / f"batch-{batch_id:012d}.json", {"id": batch_id})
    return spark.read.schema(ALERT_SCHEMA).parquet(str(folder))


def run_audit(project, kafka_broker, topic):
    result = dg.materialize(
        [alerts_audit],
        resources={
            "project": project,
            "spark": SparkResource(home=str(REPO_ROOT)),
            "kafka": KafkaResource(
                bootstrap_servers=kafka_broker.bootstrap_servers, alerts_topic=topic
            ),
        },
        raise_on_error=False,
    )
    assert result.success, result.all_events
    checks = {
        evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()
    }
    [materialization] = result.asset_materializations_for_node("alerts_audit")
    return checks, materialization.metadata


def test_audit_passes_when_every_committed_alert_is_in_kafka(
    spark, kafka_broker, unique_topics, tmp_path
):
    topic = unique_topics(partitions=2)
    settings = KafkaSettings(kafka_broker.bootstrap_servers, topics=Topics(alerts=topic))
    project = ProjectResource(home=str(REPO_ROOT), state_dir=str(tmp_path))
    for batch_id, indexes in {0: [1, 2, 3], 1: [4, 5]}.items():
        committed = commit_batch(spark, project, batch_id, indexes)
        write_kafka(alert_kafka_records(committed), settings, topic)
    # A replayed batch re-sends identical records (at-least-once): not a difference.
    write_kafka(alert_kafka_records(commit_batch(spark, project, 1, [4, 5])), settings, topic)

    checks, metadata = run_audit(project, kafka_broker, topic)
    assert checks["alerts_reached_kafka"].passed
    assert checks["kafka_alerts_in_parquet"].passed
    assert metadata["parquet_distinct_ids"].value == 5
    assert metadata["kafka_records"].value == 7
    assert metadata["kafka_distinct_ids"].value == 5


def test_audit_reports_lost_in_flight_kafka_only_and_malformed_alerts(
    spark, kafka_broker, unique_topics, tmp_path
):
    topic = unique_topics(partitions=2)
    settings = KafkaSettings(kafka_broker.bootstrap_servers, topics=Topics(alerts=topic))
    project = ProjectResource(home=str(REPO_ROOT), state_dir=str(tmp_path))
    write_kafka(alert_kafka_records(commit_batch(spark, project, 0, [1, 2])), settings, topic)
    commit_batch(spark, project, 1, [3])  # finished, yet never reached Kafka: lost
    commit_batch(spark, project, 2, [4], logged=False)  # still producing: in flight
    # An alert of an older table that is gone, and a record that breaks the contract.
    older = spark.createDataFrame([alert_row(99, 1.0, 1, 0)], ALERT_SCHEMA)
    write_kafka(alert_kafka_records(older), settings, topic)
    produce_messages(kafka_broker.bootstrap_servers, topic, [(b"tx-7", b'{"not": "an alert"}')])

    checks, metadata = run_audit(project, kafka_broker, topic)
    lost = checks["alerts_reached_kafka"]
    assert not lost.passed
    assert lost.severity == dg.AssetCheckSeverity.ERROR
    assert lost.metadata["missing_ids"].value == ["tx-3"]
    assert lost.metadata["malformed_kafka_records"].value == 1
    assert lost.metadata["in_flight"].value == 1

    extra = checks["kafka_alerts_in_parquet"]
    assert not extra.passed
    assert extra.severity == dg.AssetCheckSeverity.WARN
    assert extra.metadata["kafka_only_ids"].value == ["tx-99"]
    assert metadata["in_flight_batches"].value == [2]
