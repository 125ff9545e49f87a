"""Shared steps of the scale-out tests: a promoted model, a replayed topic, the verdict.

The scale-out tests differ only in where the scoring stream runs (a Spark standalone
cluster, a Kafka cluster losing a broker); what they prepare and how they judge the
result is here, built from the same pieces as ``fraud_assets.demo.run_end_to_end``.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from pyspark.sql import SparkSession

from fraud_assets.core import train
from fraud_assets.core.contracts import AUDITED_TRANSACTIONS_SCHEMA, FEATURE_COLUMNS
from fraud_assets.core.reconcile import (
    AlertReconciliation,
    batch_log_totals,
    expected_alert_ids,
    kafka_alert_ids,
    parquet_alert_ids,
    reconcile_alerts,
)
from fraud_assets.core.registry import new_version
from fraud_assets.core.settings import Topics
from fraud_assets.core.tables import read_table
from fraud_assets.definitions import load_definitions
from fraud_assets.defs.resources import KafkaResource, ProjectResource, build_resources
from fraud_assets.end_to_end import BATCH_STAGES
from fraud_assets.kafka.admin import TopicSpec, ensure_topics, project_topics
from fraud_assets.kafka.io import read_topic
from fraud_assets.kafka.producer import replay
from fraud_assets_tests.conftest import REPO_ROOT
from fraud_assets_tests.real_data import distinct_transactions, write_real_subset

PROMOTED_THRESHOLD = 0.5


@dataclass(frozen=True)
class PreparedRun:
    """A state folder with a promoted model, and a topic holding the transactions."""

    project: ProjectResource
    kafka: KafkaResource
    resources: dict[str, Any]
    produced: int
    expected_ids: set[str]
    """Alert ids of batch scoring (local Spark) with the promoted model: the truth."""


def unique_topics() -> Topics:
    suffix = uuid.uuid4().hex[:8]
    return Topics(
        transactions=f"transactions-{suffix}",
        alerts=f"fraud_alerts-{suffix}",
        dead_letter=f"transactions_dlq-{suffix}",
        kpis=f"fraud_kpis-{suffix}",
        kpi_partials=f"fraud_kpi_partials-{suffix}",
    )


def prepare_run(
    spark: SparkSession,
    dataset_csv: Path,
    tmp_path: Path,
    bootstrap_servers: str,
    *,
    transactions_partitions: int = 3,
    first_rows: int = 1500,
    topic_specs: Callable[[list[TopicSpec]], list[TopicSpec]] = lambda specs: specs,
) -> PreparedRun:
    """Audit, train and promote on a real subset, create the topics, replay the rows.

    The audited rows and the promoted model are computed with ``spark`` (local); the
    expected alert ids are batch scoring of every audited row with that model.

    ``topic_specs`` adapts the project's topic specs (a cluster raises their replication).
    """
    subset = write_real_subset(dataset_csv, tmp_path / "subset.csv", first_rows=first_rows)
    project = ProjectResource(
        home=str(REPO_ROOT),
        state_dir=str(tmp_path / "state"),
        dataset_csv=str(tmp_path / "subset.csv"),
        dataset_sha256="",
        # Every fraud of the dataset in a few thousand rows: ~14% frauds.
        fraud_rate_max=0.5,
    )
    topics = unique_topics()
    kafka = KafkaResource(
        bootstrap_servers=bootstrap_servers,
        transactions_partitions=transactions_partitions,
        transactions_topic=topics.transactions,
        alerts_topic=topics.alerts,
        dead_letter_topic=topics.dead_letter,
        kpis_topic=topics.kpis,
        kpi_partials_topic=topics.kpi_partials,
    )
    specs = topic_specs(project_topics(kafka.settings))
    ensure_topics(bootstrap_servers, specs)
    resources = {**build_resources(), "project": project, "kafka": kafka}
    # The real audit (Dagster assets and their checks) makes the transactions table.
    audit_keys = dict(BATCH_STAGES)["audit"]
    definitions = load_definitions()
    dg.materialize(
        [*definitions.assets, *definitions.asset_checks],
        selection=dg.AssetSelection.assets(*audit_keys)
        | dg.AssetSelection.checks_for_assets(*audit_keys),
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
    )
    audited_dir = project.table("audited_transactions")
    replayed = replay(audited_dir, bootstrap_servers, topics.transactions, progress=False)
    assert replayed.sent == len(distinct_transactions(subset))

    # One logistic regression, promoted at a fixed threshold: what these tests check is
    # where the stream runs, not how models are selected (tested elsewhere).
    audited = read_table(spark, audited_dir, AUDITED_TRANSACTIONS_SCHEMA)
    config = train.TrainingConfig(algorithm="lr")
    train_part, _ = train.time_ordered_split(audited, config.holdout_fraction)
    model = train.fit(train_part, config)
    registry = project.registry
    version = new_version("lr")
    registry.save(version, model, {"algorithm": "lr", "features": list(FEATURE_COLUMNS)})
    promotion = registry.promote(
        version, PROMOTED_THRESHOLD, "test", None, changed_by="test", reason="scale-out test"
    )
    expected = expected_alert_ids(registry.load(promotion.version), audited, promotion)
    assert expected, "the promoted model alerts on nothing: the comparison would be empty"
    return PreparedRun(project, kafka, resources, replayed.sent, expected)


def stream_verdict(
    spark: SparkSession, run: PreparedRun, bootstrap_servers: str
) -> tuple[AlertReconciliation, dict[str, int]]:
    """Both alert sinks against the expected ids, and the stream's committed batch totals."""
    paths = run.project.stream_paths
    records = read_topic(bootstrap_servers, run.kafka.settings.topics.alerts)
    result = reconcile_alerts(
        run.expected_ids,
        parquet_alert_ids(spark, paths.alerts_table),
        kafka_alert_ids([r.value for r in records], [r.key for r in records]),
    )
    return result, batch_log_totals(paths.batch_log_dir)
