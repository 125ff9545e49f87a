"""The scoring query on the real broker: restarts lose and duplicate nothing, bad input is
dead-lettered with a reason, KPIs equal batch KPIs across restarts and replays, and a
checkpoint is never reused by another query."""

import json
from collections import Counter
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from fraud_assets.core.contracts import ALERTS_TABLE_SCHEMA, AUDITED_TRANSACTIONS_SCHEMA
from fraud_assets.core.kpis import EVICTION_REQUEST, KpiSettings, start_kpi_query
from fraud_assets.core.paths import StreamPaths
from fraud_assets.core.queries import (
    CheckpointMismatchError,
    await_query,
    owes_no_data_batch,
    session_conf,
)
from fraud_assets.core.reconcile import (
    batch_log_totals,
    expected_alert_ids,
    kafka_alert_ids,
    parquet_alert_ids,
)
from fraud_assets.core.scoring import alert_kafka_records, parse_transactions
from fraud_assets.core.settings import KafkaSettings, Topics
from fraud_assets.core.stream import (
    ScoringBatchWriter,
    StreamSettings,
    read_transactions_batch,
    start_scoring_query,
)
from fraud_assets.kafka.io import produce_messages, read_topic
from fraud_assets_tests.integration.streams import (
    BAD_MESSAGES,
    CrashBeforeDelivery,
    fresh_run,
    kpis_reconciled,
    letters_match_the_topic,
    messages,
    open_window_txns,
)

pytestmark = pytest.mark.integration


def _alert_records(spark, paths):
    """The Parquet alerts as the Kafka records they are produced as (key, value)."""
    table = spark.read.schema(ALERTS_TABLE_SCHEMA).parquet(str(paths.alerts_table))
    records = alert_kafka_records(table.drop("batch_id")).collect()
    return Counter((r.key.encode(), r.value.encode()) for r in records)


def _run_bounded(spark, kafka, paths, model, promotion):
    writer = ScoringBatchWriter(spark, kafka, paths, model, promotion)
    query = start_scoring_query(
        spark, kafka, paths, writer, StreamSettings(max_offsets_per_trigger=400), bounded=True
    )
    await_query(query)
    writer.wait_for_delivery()  # the last batch's outputs follow its ledger commit
    return writer


def test_restart_on_the_same_checkpoint_loses_and_duplicates_nothing(
    spark, kafka_broker, unique_topics, tmp_path, real_rows, model_and_promotion
):
    model, promotion = model_and_promotion
    kafka, paths = fresh_run(kafka_broker, unique_topics, tmp_path, partitions=2)
    topics = kafka.topics
    first, second = real_rows.iloc[:1200], real_rows.iloc[1200:]

    produce_messages(kafka.bootstrap_servers, topics.transactions, messages(first))
    produce_messages(
        kafka.bootstrap_servers, topics.transactions, [(k, v) for k, v, _ in BAD_MESSAGES]
    )
    run1 = _run_bounded(spark, kafka, paths, model, promotion)
    assert run1.totals.scored == len(first)
    assert run1.totals.invalid == len(BAD_MESSAGES)
    assert run1.totals.batches >= 2  # maxOffsetsPerTrigger splits the backlog

    # A restart (new writer, same checkpoint) picks up only what arrived since.
    produce_messages(kafka.bootstrap_servers, topics.transactions, messages(second))
    run2 = _run_bounded(spark, kafka, paths, model, promotion)
    assert run2.totals.scored == len(second)
    assert run2.totals.invalid == 0

    everything = spark.createDataFrame(real_rows, schema=AUDITED_TRANSACTIONS_SCHEMA)
    expected = expected_alert_ids(model, everything, promotion)
    parquet_ids = parquet_alert_ids(spark, paths.alerts_table)
    records = read_topic(kafka.bootstrap_servers, topics.alerts)
    kafka_ids = kafka_alert_ids([r.value for r in records], [r.key for r in records])
    assert expected, "the model must alert on some real frauds"
    assert sorted(parquet_ids) == sorted(expected)  # exactly once in Parquet
    # Once on Kafka too without a crash: the small batches after the first sent their alerts
    # beside their ledger job (early), and their delivery did not send them again.
    assert sorted(kafka_ids) == sorted(expected)
    assert _alert_records(spark, paths) == Counter((r.key, r.value) for r in records)
    stages = {
        log["batch_id"]: log["stage_ms"]
        for log in map(json.loads, map(Path.read_text, paths.batch_log_dir.glob("batch-*.json")))
    }
    early = {batch for batch, stage_ms in stages.items() if "early_alerts" in stage_ms}
    assert early == set(stages) - {0}  # the first batch's size is not in the offset log
    assert batch_log_totals(paths.batch_log_dir)["scored"] == len(real_rows)

    # Dead letters: the original bytes, the reason, the source coordinates.
    letters = [json.loads(r.value) for r in read_topic(kafka.bootstrap_servers, topics.dead_letter)]
    assert len(letters) == len(BAD_MESSAGES)
    by_key = {letter["key"]: letter for letter in letters}
    for key, _value, reason in BAD_MESSAGES:
        assert by_key[key.decode()]["reason"] == (reason or "missing_or_invalid_field:Time")
    letters_match_the_topic(spark, kafka, paths, letters)
    quarantine = spark.read.parquet(str(paths.quarantine_table))
    assert quarantine.where(F.col("reason").isNotNull()).count() == len(BAD_MESSAGES)
    # Only batches that rejected something have a quarantine partition, with exactly their
    # rejected rows (the count is observed while the alerts are written).
    logs = [json.loads(p.read_text()) for p in paths.batch_log_dir.glob("batch-*.json")]
    rejecting = {log["batch_id"]: log["invalid"] for log in logs if log["invalid"]}
    assert sum(rejecting.values()) == len(BAD_MESSAGES)
    per_partition = {
        r["batch_id"]: r["count"] for r in quarantine.groupBy("batch_id").count().collect()
    }
    assert per_partition == rejecting
    assert len(logs) > len(rejecting)  # some batches were clean...
    partitions = {int(p.name.split("=")[1]) for p in paths.quarantine_table.glob("batch_id=*")}
    assert partitions == set(rejecting)  # ...and wrote no (empty) quarantine partition

    # Both runs' partials, summed by one KPI query, equal batch KPIs window by window.
    kpis = kpis_reconciled(spark, kafka, paths, run2.stream_id)
    assert run1.stream_id == run2.stream_id  # one query lineage across the restart
    assert kpis.kpi_windows_closed > 1
    assert (kpis.kpi_windows_missing, kpis.kpi_windows_mismatched) == (0, 0)
    assert (kpis.kpi_windows_duplicated, kpis.kpi_windows_open) == (0, 1)
    assert kpis.kpi_txn_streamed + open_window_txns(spark, paths) == len(real_rows)


NO_DATA_BATCHES = "spark.sql.streaming.noDataMicroBatches.enabled"
# A window stays open for partials until the newest one is a minute of event time past it (a
# partial exactly at the watermark is late), so each part's newest window is completed by the
# next part's partials.
MINUTE_LATE = KpiSettings(watermark_delay="1 minute")


def test_a_kpi_query_stopped_before_emitting_closed_windows_emits_them_after_a_restart(
    spark, kafka_broker, unique_topics, tmp_path, real_rows, model_and_promotion
):
    """A stop between the KPI batch that moves the watermark and the no-data batch that
    emits the windows it closed (a chaos run's kill can land there): after a restart Spark
    runs that batch only on new input, so the restarted query is given a record it drops.

    Spark without no-data batches stops exactly there: each batch moves the watermark and
    leaves the eviction to a batch that never comes.
    """
    model, promotion = model_and_promotion
    kafka, paths = fresh_run(kafka_broker, unique_topics, tmp_path, partitions=1)
    tx = kafka.topics.transactions
    produce_messages(kafka.bootstrap_servers, tx, messages(real_rows.iloc[:700]))
    stream_id = _run_bounded(spark, kafka, paths, model, promotion).stream_id
    first = kpis_reconciled(spark, kafka, paths, stream_id, MINUTE_LATE)  # ends as it should
    assert first.exact and first.kpi_windows_closed > 1
    assert not owes_no_data_batch(paths.kpi_checkpoint_dir)

    produce_messages(kafka.bootstrap_servers, tx, messages(real_rows.iloc[700:1400]))
    _run_bounded(spark, kafka, paths, model, promotion)
    with session_conf(spark, NO_DATA_BATCHES, "false"):
        stopped, writer = start_kpi_query(
            spark, kafka, paths, MINUTE_LATE, bounded=True, stream_id=stream_id
        )
    await_query(stopped)
    assert owes_no_data_batch(paths.kpi_checkpoint_dir)
    assert writer.windows == 0  # the second part's closed windows are owed

    kpis = kpis_reconciled(spark, kafka, paths, stream_id, MINUTE_LATE)  # the restart
    assert not owes_no_data_batch(paths.kpi_checkpoint_dir)
    assert kpis.kpi_windows_closed > first.kpi_windows_closed + 1
    assert (kpis.kpi_windows_missing, kpis.kpi_windows_mismatched) == (0, 0), kpis
    assert kpis.exact, kpis  # each closed window once, equal to batch, none beyond
    # The request to run a batch is on the topic and counted nowhere.
    requests = [
        r
        for r in read_topic(kafka.bootstrap_servers, kafka.topics.kpi_partials)
        if json.loads(r.value)["stream_id"] == EVICTION_REQUEST
    ]
    assert len(requests) == 1


def test_a_replayed_batch_reports_the_same_counts_and_commits_nothing_twice(
    spark, kafka_broker, unique_topics, tmp_path, real_rows, model_and_promotion
):
    """A batch run again under its id (a crash before Spark's commit) finds its partitions,
    writes nothing new and still counts its rejected rows (no write to observe them in)."""
    model, promotion = model_and_promotion
    kafka, paths = fresh_run(kafka_broker, unique_topics, tmp_path, partitions=1)
    topics = kafka.topics
    tables = tmp_path / "tables"
    produce_messages(kafka.bootstrap_servers, topics.transactions, messages(real_rows.iloc[:300]))
    produce_messages(
        kafka.bootstrap_servers, topics.transactions, [(k, v) for k, v, _ in BAD_MESSAGES]
    )
    parsed = parse_transactions(read_transactions_batch(spark, kafka))
    # The offset log Spark writes before it calls the writer says batch 7 is small, so it
    # sends its alerts early, beside its ledger job, the first time and in the replay.
    offsets = paths.checkpoint_dir / "offsets"
    offsets.mkdir(parents=True)
    for batch_id, end in ((6, 0), (7, 300 + len(BAD_MESSAGES))):
        (offsets / str(batch_id)).write_text(
            f'v1\n{{"batchWatermarkMs":0,"batchTimestampMs":0}}\n'
            f'{{"{topics.transactions}":{{"0":{end}}}}}\n'
        )
    writer = ScoringBatchWriter(spark, kafka, paths, model, promotion, stream_id="replayed")
    writer(parsed, 7)
    writer.wait_for_delivery()
    files = sorted(tables.rglob("*.parquet"))
    writer(parsed, 7)
    writer.wait_for_delivery()
    first, again = writer.totals.history
    assert (first.replayed, again.replayed) == (False, True)
    assert (again.scored, again.alerts, again.invalid) == (
        first.scored,
        first.alerts,
        first.invalid,
    )
    assert (first.scored, first.invalid) == (300, len(BAD_MESSAGES))
    assert sorted(tables.rglob("*.parquet")) == files
    assert spark.read.parquet(str(paths.quarantine_table)).count() == len(BAD_MESSAGES)
    # Kafka is at-least-once: the replay re-sent identical records ...
    letters = read_topic(kafka.bootstrap_servers, topics.dead_letter)
    assert len(letters) == 2 * len(BAD_MESSAGES)
    assert Counter((r.key, r.value) for r in letters) == {
        (r.key, r.value): 2 for r in letters[: len(BAD_MESSAGES)]
    }
    partials = read_topic(kafka.bootstrap_servers, topics.kpi_partials)
    assert Counter(r.value for r in partials) == {r.value: 2 for r in partials}
    # The alerts too, and each one is the Parquet alert row, scoring time included.
    assert ["early_alerts" in b.stage_ms for b in writer.totals.history] == [True, True]
    alerts = Counter((r.key, r.value) for r in read_topic(kafka.bootstrap_servers, topics.alerts))
    assert alerts and alerts == {record: 2 for record in _alert_records(spark, paths)}
    # ... and the KPI query counts each batch's partials once.
    kpis = kpis_reconciled(spark, kafka, paths, "replayed")
    assert (kpis.kpi_windows_closed > 0, kpis.kpi_windows_open) == (True, 1)
    assert (kpis.kpi_windows_missing, kpis.kpi_windows_mismatched) == (0, 0)
    assert kpis.kpi_txn_streamed + open_window_txns(spark, paths) == 300


def test_checkpoint_of_another_topic_is_refused_and_kept(
    spark, kafka_broker, unique_topics, tmp_path, model_and_promotion
):
    model, promotion = model_and_promotion
    paths = StreamPaths.under(tmp_path / "tables", tmp_path / "checkpoints")
    kafka_a = KafkaSettings(
        bootstrap_servers=kafka_broker.bootstrap_servers,
        topics=Topics(transactions=unique_topics(prefix="tx-a")),
    )
    _run_bounded(spark, kafka_a, paths, model, promotion)
    before = sorted(p.name for p in paths.checkpoint_dir.iterdir())

    kafka_b = KafkaSettings(
        bootstrap_servers=kafka_broker.bootstrap_servers,
        topics=Topics(transactions=unique_topics(prefix="tx-b")),
    )
    with pytest.raises(CheckpointMismatchError, match="never deletes checkpoints"):
        _run_bounded(spark, kafka_b, paths, model, promotion)
    assert sorted(p.name for p in paths.checkpoint_dir.iterdir()) == before


def test_a_batch_committed_but_not_delivered_is_delivered_by_the_next_writer(
    spark, kafka_broker, unique_topics, tmp_path, real_rows, model_and_promotion
):
    model, promotion = model_and_promotion
    kafka, paths = fresh_run(kafka_broker, unique_topics, tmp_path, partitions=1)
    topics = kafka.topics
    produce_messages(kafka.bootstrap_servers, topics.transactions, messages(real_rows.iloc[:500]))
    produce_messages(
        kafka.bootstrap_servers, topics.transactions, [(k, v) for k, v, _ in BAD_MESSAGES]
    )
    parsed = parse_transactions(read_transactions_batch(spark, kafka))
    crashing = CrashBeforeDelivery(spark, kafka, paths, model, promotion, stream_id="s")
    crashing(parsed, 0)
    with pytest.raises(RuntimeError, match="killed after the ledger commit"):
        crashing.wait_for_delivery()
    # The ledger is committed; nothing else is, and the batch has no log.
    assert (paths.ledger_table / "batch_id=0").is_dir()
    assert not paths.alerts_table.exists() and not paths.quarantine_table.exists()
    assert read_topic(kafka.bootstrap_servers, topics.alerts) == []
    assert crashing.undelivered() == [0]

    # The next process's writer delivers batch 0 before its first new batch (1, empty here).
    writer = ScoringBatchWriter(spark, kafka, paths, model, promotion, stream_id="s")
    writer(parsed.limit(0), 1)
    writer.wait_for_delivery()
    assert writer.undelivered() == []
    expected = expected_alert_ids(
        model,
        spark.createDataFrame(real_rows.iloc[:500], schema=AUDITED_TRANSACTIONS_SCHEMA),
        promotion,
    )
    assert expected
    assert sorted(parquet_alert_ids(spark, paths.alerts_table)) == sorted(expected)
    records = read_topic(kafka.bootstrap_servers, topics.alerts)
    assert sorted(kafka_alert_ids([r.value for r in records], [r.key for r in records])) == sorted(
        expected
    )
    letters = [json.loads(r.value) for r in read_topic(kafka.bootstrap_servers, topics.dead_letter)]
    assert len(letters) == len(BAD_MESSAGES)
    letters_match_the_topic(spark, kafka, paths, letters)
    first = json.loads((paths.batch_log_dir / "batch-000000000000.json").read_text())
    assert (first["scored"], first["invalid"], first["replayed"]) == (500, len(BAD_MESSAGES), True)
