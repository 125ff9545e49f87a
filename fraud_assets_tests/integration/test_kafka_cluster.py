"""A 3-broker KRaft cluster loses a broker (kill -9) mid-stream; no alert is lost.

Every topic has 3 replicas and ``min.insync.replicas=2``: an acknowledged write is on two
brokers, so with one broker dead the cluster elects new leaders and the stream, after a
pause, finishes with exactly the alerts batch scoring expects.
"""

import threading
import time

import dagster as dg
import pytest

from fraud_assets.definitions import load_definitions
from fraud_assets.kafka.admin import admin_client
from fraud_assets.kafka.broker import FAST_START_JVM_OPTIONS
from fraud_assets.kafka.cluster import ClusterSettings, KafkaCluster
from fraud_assets_tests.integration.scale_out import prepare_run, stream_verdict
from fraud_assets_tests.kafka_fixtures import BROKER_JARS_DIR

pytestmark = pytest.mark.integration

BATCHES_BEFORE_KILL = 1
MAX_OFFSETS_PER_TRIGGER = 400
"""~2k transactions in batches of 400: the kill lands with most of the stream to go."""


@pytest.fixture
def kafka_cluster(tmp_path):
    cluster = KafkaCluster(
        ClusterSettings(
            state_dir=tmp_path / "cluster",
            jars_dir=BROKER_JARS_DIR,
            nodes=3,
            replication_factor=3,
            min_insync_replicas=2,
            heap="384m",
            jvm_options=FAST_START_JVM_OPTIONS,
        )
    )
    cluster.start(timeout_s=120)
    try:
        yield cluster
    finally:
        cluster.stop()
    assert cluster.pids() == []


def _partition_leaders(bootstrap_servers: str, topics: list[str]) -> dict[tuple[str, int], int]:
    with admin_client(bootstrap_servers) as client:
        described = client.describe_topics(topics)
    return {
        (topic["name"], partition["partition_index"]): partition["leader_id"]
        for topic in described
        for partition in topic["partitions"]
    }


def _replication(bootstrap_servers: str, topics: list[str]) -> dict[str, set[int]]:
    with admin_client(bootstrap_servers) as client:
        described = client.describe_topics(topics)
    return {
        topic["name"]: {len(p["replica_nodes"]) for p in topic["partitions"]} for topic in described
    }


def test_killing_one_broker_mid_stream_loses_no_alert(spark, repo_paths, tmp_path, kafka_cluster):
    started = time.monotonic()
    bootstrap = kafka_cluster.bootstrap_servers
    run = prepare_run(
        spark,
        repo_paths.dataset_csv,
        tmp_path,
        bootstrap,
        transactions_partitions=3,
        topic_specs=kafka_cluster.replicated,
    )
    topics = run.kafka.settings.topics
    names = [topics.transactions, topics.alerts, topics.dead_letter, topics.kpis]
    assert _replication(bootstrap, names) == {name: {3} for name in names}
    prepared = time.monotonic()

    # The victim leads the alerts partition: the stream's own writes must fail over.
    victim_id = _partition_leaders(bootstrap, [topics.alerts])[(topics.alerts, 0)]
    victim = kafka_cluster.nodes[victim_id - 1]
    assert victim.settings.node_id == victim_id
    batch_log = run.project.stream_paths.batch_log_dir
    stream_done = threading.Event()
    killed_after: list[int] = []

    def kill_mid_stream() -> None:
        while not stream_done.wait(0.2):
            committed = len(list(batch_log.glob("batch-*.json")))
            if committed >= BATCHES_BEFORE_KILL:
                victim.kill()
                killed_after.append(committed)
                return

    killer = threading.Thread(target=kill_mid_stream, daemon=True)
    killer.start()
    try:
        result = (
            load_definitions()
            .get_job_def("scoring_stream")
            .execute_in_process(
                run_config={
                    "ops": {
                        "run_scoring_stream": {
                            "config": {
                                "bounded": True,
                                "max_offsets_per_trigger": MAX_OFFSETS_PER_TRIGGER,
                            }
                        }
                    }
                },
                resources=run.resources,
                instance=dg.DagsterInstance.ephemeral(),
            )
        )
    finally:
        stream_done.set()
        killer.join(timeout=30)
    streamed = time.monotonic()
    assert result.success

    # The kill happened, and happened mid-stream (batches were still to come).
    assert killed_after, "the stream ended before the broker could be killed"
    assert not victim.is_running()
    assert len(kafka_cluster.running_nodes()) == 2
    verdict, totals = stream_verdict(spark, run, bootstrap)
    assert totals["batches"] > killed_after[0], (totals, killed_after)
    assert totals["scored"] == run.produced
    assert totals["invalid"] == 0
    # Exactly the expected alert ids, in both sinks, none twice in Parquet.
    assert verdict.missing_ids == [] and verdict.missing_alerts == 0
    assert verdict.unexpected_ids == [] and verdict.unexpected_alerts == 0
    assert verdict.duplicate_alerts_parquet == 0
    assert verdict.alerts_parquet == verdict.alerts_kafka_distinct == len(run.expected_ids)
    assert verdict.exact
    # New leaders on the surviving brokers.
    leaders = _partition_leaders(bootstrap, names)
    assert victim_id not in set(leaders.values()), leaders
    print(
        f"\nkafka cluster test: prepare {prepared - started:.1f}s, stream with kill "
        f"{streamed - prepared:.1f}s, {totals['batches']} batches (kill after "
        f"{killed_after[0]}), {len(run.expected_ids)} alerts"
    )
