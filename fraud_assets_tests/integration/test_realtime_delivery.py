"""Real-time delivery on the real broker: alerts through Spark's real-time mode, the tables,
dead letters and KPIs still the micro-batch query's, exact after a ``kill -9`` too."""

import json
import os
import sys
import threading
import time
from collections import defaultdict

import pytest

from fraud_assets.chaos.harness import StreamProcess
from fraud_assets.core.contracts import AUDITED_TRANSACTIONS_SCHEMA, FEATURE_COLUMNS
from fraud_assets.core.kpis import KpiSettings
from fraud_assets.core.paths import ProjectPaths, StreamPaths
from fraud_assets.core.queries import reached
from fraud_assets.core.realtime import RealtimeSettings, RealtimeSetupError
from fraud_assets.core.reconcile import expected_alert_ids, kafka_alert_ids, parquet_alert_ids
from fraud_assets.core.registry import ModelRegistry, Promotion
from fraud_assets.core.stream import ScoringBatchWriter
from fraud_assets.core.stream_run import REALTIME, RunSettings, ScoringRun
from fraud_assets.kafka.io import end_offsets, produce_messages, read_topic
from fraud_assets_tests.conftest import REPO_ROOT
from fraud_assets_tests.factories import xgboost_model
from fraud_assets_tests.integration.streams import (
    BAD_MESSAGES,
    fresh_run,
    kpis_reconciled,
    letters_match_the_topic,
    messages,
)

pytestmark = pytest.mark.integration

BOUNDED_REALTIME = RunSettings(bounded=True, delivery=REALTIME, kpi=KpiSettings("0 seconds"))


def _alert_records(kafka):
    records = read_topic(kafka.bootstrap_servers, kafka.topics.alerts)
    return records, kafka_alert_ids([r.value for r in records], [r.key for r in records])


def _expected(spark, model, promotion, rows):
    frame = spark.createDataFrame(rows, schema=AUDITED_TRANSACTIONS_SCHEMA)
    return expected_alert_ids(model, frame, promotion)


def _run(spark, kafka, paths, model, promotion, settings, registry=None):
    writer = ScoringBatchWriter(
        spark, kafka, paths, model, promotion, registry=registry, delivers_alerts=False
    )
    return ScoringRun(spark, kafka, paths, writer, settings, registry=registry)


def test_bounded_realtime_delivery_is_exact_and_the_tables_stay_exactly_once(
    spark, kafka_broker, unique_topics, tmp_path, real_rows, model_and_promotion
):
    # One partition: the session's local[2] holds its slot plus one for the micro-batch query.
    model, promotion = model_and_promotion
    kafka, paths = fresh_run(kafka_broker, unique_topics, tmp_path, partitions=1)
    produce_messages(kafka.bootstrap_servers, kafka.topics.transactions, messages(real_rows))
    produce_messages(
        kafka.bootstrap_servers, kafka.topics.transactions, [(k, v) for k, v, _ in BAD_MESSAGES]
    )
    run = _run(spark, kafka, paths, model, promotion, BOUNDED_REALTIME)
    run.run()

    expected = _expected(spark, model, promotion, real_rows)
    records, kafka_ids = _alert_records(kafka)
    assert expected
    # Every alert in Kafka came from the real-time query once (no crash: no replay), none
    # from the micro-batch query, which committed the same alerts to Parquet exactly once.
    assert sorted(kafka_ids) == sorted(expected)
    assert sorted(parquet_alert_ids(spark, paths.alerts_table)) == sorted(expected)
    assert not run.realtime.isActive and not run.scoring.isActive
    # Real-time alerts carry the same score and explanation as the committed ones.
    committed = {
        r["transaction_id"]: r for r in spark.read.parquet(str(paths.alerts_table)).collect()
    }
    for payload in (json.loads(r.value) for r in records):
        row = committed[payload["transaction_id"]]
        assert payload["alert_id"] == row["alert_id"]
        assert payload["fraud_prob"] == row["fraud_prob"]
        assert [f["feature"] for f in payload["top_features"]] == [
            f["feature"] for f in row["top_features"]
        ]
    # Dead letters and KPIs are the micro-batch query's, as without real-time delivery.
    letters = [json.loads(r.value) for r in read_topic(kafka, kafka.topics.dead_letter)]
    assert len(letters) == len(BAD_MESSAGES)
    letters_match_the_topic(spark, kafka, paths, letters)
    kpis = kpis_reconciled(spark, kafka, paths, run.scoring.id)
    assert kpis.kpi_windows_closed > 1
    assert (kpis.kpi_windows_missing, kpis.kpi_windows_mismatched) == (0, 0)


def test_a_threshold_change_restarts_the_realtime_query_with_it(
    spark, kafka_broker, unique_topics, tmp_path, real_rows, model_and_promotion
):
    model, _ = model_and_promotion
    registry = ModelRegistry(tmp_path / "models")
    registry.save("rt-v1", model, {"features": list(FEATURE_COLUMNS)})
    first = registry.promote("rt-v1", 0.5, "max_f1", 0.8, changed_by="test")
    kafka, paths = fresh_run(kafka_broker, unique_topics, tmp_path, partitions=1)
    settings = RunSettings(delivery=REALTIME, realtime=RealtimeSettings("5 seconds"))
    run = _run(spark, kafka, paths, model, first, settings, registry=registry)
    stop = threading.Event()
    errors = []

    def target():
        try:
            run.run(stop_requested=stop.is_set)
        except BaseException as error:  # reported by the test thread
            errors.append(error)

    thread = threading.Thread(target=target, daemon=True)
    part1, part2 = real_rows.iloc[:1000], real_rows.iloc[1000:]
    topic = kafka.topics.transactions
    try:
        thread.start()
        produce_messages(kafka.bootstrap_servers, topic, messages(part1))
        targets = end_offsets(kafka, topic)
        # Wait for a checkpoint past part 1: the restart then scores none of it again.
        _wait(
            lambda: run.realtime is not None and reached(run.realtime.lastProgress, topic, targets),
            errors,
        )
        registry.set_threshold(0.3, changed_by="alice", reason="catch more fraud")
        _wait(lambda: run.realtime_restarts == 1, errors)
        produce_messages(kafka.bootstrap_servers, topic, messages(part2))
        lowered = Promotion("rt-v1", 0.3, "manual", "")
        want = _expected(spark, model, first, part1) | _expected(spark, model, lowered, part2)
        _wait(lambda: set(_alert_records(kafka)[1]) >= want, errors, timeout_s=180)
    finally:
        stop.set()
        thread.join(timeout=120)
    assert not errors, errors
    assert not thread.is_alive()
    _, kafka_ids = _alert_records(kafka)
    assert set(kafka_ids) == want
    # The change mattered: part 2 at the old threshold alerts on fewer transactions.
    assert want - _expected(spark, model, first, part1) - _expected(spark, model, first, part2)
    assert all(not q.isActive for q in run.queries)


def _wait(condition, errors, timeout_s=120.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert not errors, errors
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_an_xgboost_model_is_refused_before_anything_starts(
    spark, kafka_broker, unique_topics, tmp_path
):
    kafka, paths = fresh_run(kafka_broker, unique_topics, tmp_path, partitions=1)
    model = xgboost_model(spark)
    run = _run(spark, kafka, paths, model, Promotion("xgb-1", 0.5, "p", ""), BOUNDED_REALTIME)
    with pytest.raises(RealtimeSetupError, match="XGBoost.*FRAUD_ALERT_DELIVERY=microbatch"):
        run.run()
    assert run.queries == []
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "tables").exists()


def test_too_few_task_slots_are_refused_with_what_to_set(
    spark, kafka_broker, unique_topics, tmp_path, model_and_promotion
):
    # Two partitions need 2 real-time slots + 1: the session's local[2] has 2.
    model, promotion = model_and_promotion
    kafka, paths = fresh_run(kafka_broker, unique_topics, tmp_path, partitions=2)
    run = _run(spark, kafka, paths, model, promotion, BOUNDED_REALTIME)
    with pytest.raises(RealtimeSetupError, match=r"needs 3 task slots.*has 2.*local\[3\]"):
        run.run()
    assert run.queries == []
    assert not (tmp_path / "checkpoints").exists()


def test_after_kill_9_every_alert_is_delivered_and_duplicates_are_identical(
    spark, kafka_broker, unique_topics, tmp_path, real_rows, model_and_promotion
):
    """``fraud-assets stream --realtime`` in its own process, with the default master (its
    ``local[*]`` sized for the real-time slots), killed mid checkpoint interval."""
    model, promotion = model_and_promotion
    state = tmp_path / "state"
    registry = ModelRegistry(ProjectPaths.at(REPO_ROOT, state).models_dir)
    registry.save(promotion.version, model, {"features": list(FEATURE_COLUMNS)})
    registry.promote(promotion.version, promotion.threshold, "fixed", 0.8, changed_by="test")
    kafka, _ = fresh_run(kafka_broker, unique_topics, tmp_path, partitions=2)
    paths = StreamPaths.under(state / "tables", state / "checkpoints")
    topics = kafka.topics
    env = {
        **os.environ,
        "FRAUD_HOME": str(REPO_ROOT),
        "FRAUD_STATE_DIR": str(state),
        "FRAUD_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "FRAUD_TOPIC_TRANSACTIONS": topics.transactions,
        "FRAUD_TOPIC_ALERTS": topics.alerts,
        "FRAUD_TOPIC_DEAD_LETTER": topics.dead_letter,
        "FRAUD_TOPIC_KPIS": topics.kpis,
        "FRAUD_TOPIC_KPI_PARTIALS": topics.kpi_partials,
        "FRAUD_ALERT_DELIVERY": "realtime",
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    env.pop("DAGSTER_HOME", None)
    stream = StreamProcess(env, tmp_path / "logs", tmp_path)
    part1, part2 = real_rows.iloc[:1200], real_rows.iloc[1200:]
    first_alerts = _expected(spark, model, promotion, part1)
    try:
        produce_messages(kafka.bootstrap_servers, topics.transactions, messages(part1))
        stream.start()
        # Killed once part 1's alerts are out, well inside the 60 s checkpoint interval: the
        # restarted query replays them.
        _wait(lambda: set(_alert_records(kafka)[1]) >= first_alerts, [], timeout_s=240)
        assert stream.exit_code() is None
        assert stream.kill9() == 0  # no Spark JVM outlived it
        produce_messages(kafka.bootstrap_servers, topics.transactions, messages(part2))
        stream.start("--bounded")
        assert stream.wait(timeout_s=600) == 0
    finally:
        stream.stop()

    expected = _expected(spark, model, promotion, real_rows)
    records, kafka_ids = _alert_records(kafka)
    assert set(kafka_ids) == expected  # at least once, nothing unexpected
    assert len(kafka_ids) > len(expected)  # the replay after the kill re-sent some
    copies = defaultdict(set)
    for record in records:
        copies[record.key].add(record.value)
    assert all(len(values) == 1 for values in copies.values())  # duplicates are identical
    assert sorted(parquet_alert_ids(spark, paths.alerts_table)) == sorted(expected)
