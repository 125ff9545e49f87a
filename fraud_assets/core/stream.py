"""The scoring stream: Kafka ``transactions`` -> alerts (Kafka + Parquet), dead letters, KPIs.

One Structured Streaming query reads Kafka and parses each message once (the parse is part
of the streaming plan, planned once per micro-batch by Spark itself). Its ``foreachBatch``
writer commits each micro-batch idempotently, in as few Spark jobs as the outputs allow:

0. the model version, threshold and scoring time of batch ``N`` are chosen and recorded
   before anything is written (``<batch_log_dir>/models/batch-N.json``): given a registry,
   the writer re-reads the promotion pointer at the start of every batch, so an operator's
   promotion or threshold change applies from the next micro-batch without a restart; a
   replayed batch reuses the recorded choice (every alert's ``scored_at`` is the batch's
   scoring time), so its outputs stay byte-identical;
1. **one pass over Kafka**: every message of the batch, scored or rejected, is written once
   to the ledger table (``<ledger_table>/batch_id=N``, through a staging folder and an atomic
   rename; a replayed batch finds the folder and skips the write). The counts (scored,
   alerts, rejected) are observed while it is written. The committed ledger partition is the
   batch's record of truth. A large batch (a backlog) is not cached: this is its only job.
   A small batch (at most :attr:`StreamSettings.early_alerts_max_messages`, which is what a
   live stream's batches are) produces its alerts to ``fraud_alerts`` first: the pass
   scores it into memory and sends the alerts (**early alerts**), then the ledger is written
   from memory. An alert is then out one Spark job after the trigger instead of two, and a
   replay sends the identical records again;
2. **delivery**: every other output is derived from that committed partition, so a replay
   derives byte-identical outputs: the alerts (``<alerts_table>/batch_id=N``) and rejected
   messages (``<quarantine_table>/batch_id=N``) are committed the same way, only when the
   batch has any; one Kafka job produces the alerts (unless sent early) to
   ``fraud_alerts``, the dead letters to ``transactions_dlq`` and the batch's KPI partials
   (:func:`fraud_assets.core.kpis.kpi_partial_records`) to the KPI query's input topic
   (at-least-once, keyed, so consumers de-duplicate). These steps run at the same time, and
   the whole delivery of batch ``N`` runs in the background while batch ``N+1`` is read and
   scored (at most one batch in delivery);
3. a batch is delivered once its JSON batch log (counts, each step's wall time) is written.
   A ledger partition without one (a crash between 1 and 3, even after Spark committed the
   batch's offsets) is delivered again, from the ledger, before the next new batch
   (:meth:`ScoringBatchWriter.recover`).

In real-time delivery (:mod:`fraud_assets.core.realtime`) the writer does everything but
produce the alerts to Kafka: the real-time query does that in milliseconds.

Spark's checkpoint (one per query, never deleted by code) makes a restart resume at the
first uncommitted batch with the same offsets.
"""

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import reduce
from pathlib import Path

from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from fraud_assets.core.contracts import LEDGER_TABLE_SCHEMA
from fraud_assets.core.explain import UnexplainableModelError, top_features
from fraud_assets.core.kpis import kpi_partial_records
from fraud_assets.core.paths import StreamPaths
from fraud_assets.core.queries import batch_offsets, guard_checkpoint, start_with_trigger
from fraud_assets.core.registry import (
    ModelRegistry,
    Promotion,
    check_compatible,
    write_json_atomic,
)
from fraud_assets.core.scoring import (
    alert_kafka_records,
    dead_letter_kafka_records,
    ledger_alerts,
    ledger_dead_letters,
    ledger_projection,
    ledger_rows,
    ledger_shadow,
    parse_transactions,
)
from fraud_assets.core.settings import KafkaSettings
from fraud_assets.core.sinks import (
    commit_batch_partition,
    read_batch_partition,
    run_concurrently,
    write_kafka,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamSettings:
    """How the scoring query reads Kafka and how often it commits."""

    trigger_interval: str = "1 second"
    """Micro-batch interval in unbounded mode (bounded mode drains what is available)."""
    max_offsets_per_trigger: int = 250_000
    """At most this many messages per micro-batch (a backlog after an outage is drained in
    batches of this size). Each micro-batch pays a fixed cost (~0.9 s of planning, commits
    and the driver's own work on 2 cores, ``docs/performance.md``): with 100,000 that was
    about a fifth of a full batch's time; nothing is cached per batch, so a larger batch
    needs no more memory than a small one."""
    early_alerts_max_messages: int = 50_000
    """Micro-batches of at most this many messages send their alerts before their ledger is
    written (0: never): the one pass scores the batch into memory and produces its alerts,
    then the ledger is written from memory. An alert is out one Spark job after the trigger
    instead of two (the ledger job, then the delivery's Kafka job): ~150-300 ms sooner at
    1k-10k tx/s (``docs/performance.md``). The memory is the batch's scored rows (a few
    hundred bytes each); a backlog's larger batches are not cached. The size is read from the
    query's offset log, so a query's first batch after a start does not send early."""
    starting_offsets: str = "earliest"
    query_name: str = "fraud_scoring"
    max_poll_records: int = 20_000
    """Records one Kafka consumer poll may return (Kafka's default 500 makes a 100k-row
    micro-batch 200 round trips per partition)."""
    max_partition_fetch_bytes: int = 16 * 1024 * 1024
    """Bytes one fetch may return per partition (Kafka's default 1 MiB is ~1,400 messages).
    With the poll size above it cut reading + parsing from ~65 to ~45 core-µs per message
    here (``make bench``); a consumer holds at most this much per partition."""
    fetch_max_wait_ms: int = 20
    """How long the broker may hold a fetch that has no new data (Kafka's default 500 ms).

    Spark reuses a task's Kafka consumer for the next micro-batch, and a consumer always has
    its next fetch in flight: at the end of the log that fetch waits at the broker for new
    data, and the next micro-batch's read waits for it. With the default, every small
    micro-batch spent ~0.5 s per task waiting (its tasks ran 300-600 ms on ~50 ms of CPU;
    ``docs/performance.md``)."""

    def consumer_options(self) -> dict[str, str]:
        """The Kafka consumer settings above as Spark Kafka source options."""
        return {
            "kafka.max.poll.records": str(self.max_poll_records),
            "kafka.max.partition.fetch.bytes": str(self.max_partition_fetch_bytes),
            "kafka.fetch.max.bytes": str(4 * self.max_partition_fetch_bytes),
            "kafka.fetch.max.wait.ms": str(self.fetch_max_wait_ms),
        }


@dataclass
class BatchStats:
    """What one committed micro-batch did."""

    batch_id: int
    input_rows: int
    scored: int
    alerts: int
    invalid: int
    model_version: str
    threshold: float
    duration_ms: int
    replayed: bool
    stage_ms: dict[str, int] = field(default_factory=dict)
    """Wall milliseconds of each step: ``ledger`` (read Kafka, parse, score, commit the
    ledger: the one pass over the batch), then, at the same time, ``kafka`` (produce alerts,
    dead letters and KPI partials), ``alerts`` (commit the alerts partition, when there are
    alerts) and ``dead_letters`` (commit the quarantine partition, when something was
    rejected) and ``shadow`` (commit the shadow partition, while a challenger is named);
    ``early_alerts`` (from the writer's start until a small batch's alerts were produced, before
    its ledger) when they were sent early."""
    challenger_version: str | None = None
    """The challenger scored in shadow in this batch (None: none was named)."""


@dataclass
class StreamTotals:
    """Running totals over the batches this process committed."""

    batches: int = 0
    input_rows: int = 0
    scored: int = 0
    alerts: int = 0
    invalid: int = 0
    last_batch: BatchStats | None = None
    history: list[BatchStats] = field(default_factory=list)

    def add(self, stats: BatchStats) -> None:
        self.batches += 1
        self.input_rows += stats.input_rows
        self.scored += stats.scored
        self.alerts += stats.alerts
        self.invalid += stats.invalid
        self.last_batch = stats
        self.history.append(stats)


class Laps:
    """Wall milliseconds of consecutive steps, each measured from the end of the previous."""

    def __init__(self) -> None:
        self.ms: dict[str, int] = {}
        self._last = time.monotonic()

    def done(self, step: str) -> None:
        now = time.monotonic()
        self.ms[step] = int((now - self._last) * 1000)
        self._last = now


def ledger_counts() -> tuple[Column, ...]:
    """What a batch log counts of a ledger: scored (valid), alerts and rejected rows."""
    return (
        F.count_if(F.col("reason").isNull()).alias("scored"),
        F.count_if(F.col("is_alert")).alias("alerts"),
        F.count_if(F.col("reason").isNotNull()).alias("invalid"),
    )


@dataclass(frozen=True)
class _Scorer:
    """A loaded model version and what scoring with it needs, built once.

    ``top_features`` is its explanation expression (None: not explainable); its ledger
    projections are built once per threshold (building one is hundreds of JVM calls).
    """

    model: PipelineModel
    top_features: Column | None
    _projections: dict[tuple, tuple[Column, ...]] = field(default_factory=dict)

    def projection(
        self, threshold: float, version: str, challenger: Promotion | None = None
    ) -> tuple[Column, ...]:
        shadow = None if challenger is None else (challenger.version, challenger.threshold)
        key = (threshold, shadow)
        if key not in self._projections:
            self._projections[key] = ledger_projection(
                threshold, version, self.top_features, shadow
            )
        return self._projections[key]


MODEL_CACHE_SIZE = 3
"""Loaded model versions kept by a writer (the current one and a couple to switch back to)."""


class ScoringBatchWriter:
    """The ``foreachBatch`` function of the scoring query (see the module docstring).

    It is called with a micro-batch of :func:`~fraud_assets.core.scoring.parse_transactions`
    rows and its batch id.

    Args:
        spark: The session the query runs in.
        kafka: Where alerts, dead letters and KPI partials are produced.
        paths: The tables, batch logs and checkpoint of the query.
        model: The loaded model of ``promotion.version``.
        promotion: The promotion to score with when no registry is given (and the first one
            otherwise, until the registry says something else).
        on_batch: Called with each committed batch's stats.
        registry: When given, the promotion pointer is re-read at the start of every
            micro-batch and a changed version or threshold applies to that batch.
        delivers_alerts: Produce the alerts to Kafka (False in real-time delivery, where the
            real-time query produces them).
        early_alerts_max_messages: Batches of at most this many messages send their alerts
            before their ledger (:attr:`StreamSettings.early_alerts_max_messages`; 0: never).
        challenger: A model version (and threshold) to score in shadow when no registry is
            given (with a registry, its challenger pointer is re-read every batch instead),
            with ``challenger_model``, its loaded model.
        stream_id: The id the KPI partials carry; None reads the scoring query's own id from
            its checkpoint (stable across restarts) at the first batch.
        pipelined: Deliver a committed batch (everything but the ledger) in the background
            while the next one is scored; False delivers it before returning (tests that
            call the writer directly, and a run that must end with everything delivered
            calls :meth:`wait_for_delivery`).
    """

    def __init__(
        self,
        spark: SparkSession,
        kafka: KafkaSettings,
        paths: StreamPaths,
        model: PipelineModel,
        promotion: Promotion,
        on_batch: Callable[[BatchStats], None] | None = None,
        *,
        registry: ModelRegistry | None = None,
        delivers_alerts: bool = True,
        early_alerts_max_messages: int = StreamSettings.early_alerts_max_messages,
        stream_id: str | None = None,
        pipelined: bool = True,
        challenger: Promotion | None = None,
        challenger_model: PipelineModel | None = None,
    ):
        self.spark = spark
        self.kafka = kafka
        self.paths = paths
        self.promotion = promotion
        """The promotion the last micro-batch was scored with."""
        self.registry = registry
        self.on_batch = on_batch
        self.delivers_alerts = delivers_alerts
        self.early_alerts_max_messages = early_alerts_max_messages
        self._stream_id = stream_id
        self.pipelined = pipelined
        self._delivery: threading.Thread | None = None
        self._delivery_error: BaseException | None = None
        self._recovered = False
        self.totals = StreamTotals()
        self._lock = threading.Lock()
        self._scorers: OrderedDict[str, _Scorer] = OrderedDict()
        self._scorers[promotion.version] = _Scorer(model, _explanation(model, promotion.version))
        self.challenger = challenger
        """The challenger the last micro-batch was scored with in shadow (None: none)."""
        if challenger is not None:
            if challenger_model is None:
                raise ValueError("a challenger needs its challenger_model")
            self._scorers[challenger.version] = _Scorer(challenger_model, None)

    @property
    def model(self) -> PipelineModel:
        """The model of the current promotion."""
        return self._scorers[self.promotion.version].model

    def model_of(self, version: str) -> PipelineModel:
        """The loaded model of ``version`` (from the registry, once)."""
        return self._scorer(version).model

    def _scorer(self, version: str) -> _Scorer:
        """The loaded model of ``version`` (loaded once, then cached)."""
        if version in self._scorers:
            self._scorers.move_to_end(version)
            return self._scorers[version]
        if self.registry is None:
            raise KeyError(version)
        check_compatible(self.registry.metadata(version))
        model = self.registry.load(version)
        scorer = _Scorer(model, _explanation(model, version))
        self._scorers[version] = scorer
        while len(self._scorers) > MODEL_CACHE_SIZE:
            self._scorers.popitem(last=False)
        return scorer

    def _wanted(self) -> Promotion:
        """The promotion to apply to a new batch: the registry's, if it is usable."""
        if self.registry is None:
            return self.promotion
        try:
            wanted = self.registry.promoted()
        except (OSError, ValueError, TypeError) as error:
            log.error("cannot read the promotion pointer (%s): keeping %s", error, self.promotion)
            return self.promotion
        if wanted is None:
            return self.promotion
        try:
            self._scorer(wanted.version)
        except Exception as error:  # a bad model must not stop the stream: keep scoring
            log.error(
                "promoted model %s cannot be loaded (%s): still scoring with %s",
                wanted.version,
                error,
                self.promotion.version,
            )
            return self.promotion
        return wanted

    def promotion_for(self, batch_id: int) -> tuple[Promotion, bool]:
        """The promotion batch ``batch_id`` is scored with, and whether it was recorded before.

        A new batch takes :meth:`_wanted` and records it before anything is written, with
        its scoring time (:class:`_BatchRecord`); a replayed batch (same id after a
        crash) gets the recorded one back, so its outputs are the ones it would have
        committed the first time.
        """
        path = self._record_path(batch_id)
        if path.is_file():
            recorded = Promotion.from_dict(json.loads(path.read_text()))
            try:
                self._scorer(recorded.version)
            except Exception as error:
                # Only a writer without a registry (or a deleted version) gets here.
                log.warning(
                    "batch %d was first scored with %s, which is not available here (%s); "
                    "replaying it with %s",
                    batch_id,
                    recorded.version,
                    error,
                    self.promotion.version,
                )
                return self.promotion, True
            return recorded, True
        wanted = self._wanted()
        challenger = self._wanted_challenger(wanted)
        record = {"batch_id": batch_id, **asdict(wanted)}
        record["challenger"] = None if challenger is None else asdict(challenger)
        record["scored_at_ms"] = int(time.time() * 1000)
        write_json_atomic(path, record)
        return wanted, False

    def _wanted_challenger(self, champion: Promotion) -> Promotion | None:
        """The challenger to score a new batch with in shadow, if one is named and loads."""
        if self.registry is None:
            wanted = self.challenger
        else:
            try:
                wanted = self.registry.challenger()
            except (OSError, ValueError, TypeError) as error:
                log.error("cannot read the challenger pointer (%s): no shadow scoring", error)
                return None
        if wanted is None or wanted.version == champion.version:
            return None
        try:
            self._scorer(wanted.version)
        except Exception as error:  # a bad challenger must not stop the stream either
            log.error(
                "challenger %s cannot be loaded (%s): no shadow scoring", wanted.version, error
            )
            return None
        return wanted

    def _record_path(self, batch_id: int) -> Path:
        return self.paths.batch_models_dir / f"batch-{batch_id:012d}.json"

    def recorded(self, batch_id: int) -> "_BatchRecord":
        """What :meth:`promotion_for` recorded for ``batch_id``."""
        return _BatchRecord.read(self._record_path(batch_id))

    def _sends_early_alerts(self, batch_id: int) -> bool:
        """Whether batch ``batch_id`` is small enough to send its alerts before its ledger."""
        if not self.delivers_alerts or self.early_alerts_max_messages <= 0:
            return False
        offsets = batch_offsets(self.paths.checkpoint_dir, batch_id)
        return offsets is not None and 0 < offsets.messages <= self.early_alerts_max_messages

    def _challenger_model(self, batch_id: int, challenger: Promotion) -> PipelineModel | None:
        try:
            return self._scorer(challenger.version).model
        except Exception as error:  # only a replay whose challenger was deleted since
            log.warning(
                "batch %d was first scored in shadow with %s, which is not available here "
                "(%s); replaying it without shadow scores",
                batch_id,
                challenger.version,
                error,
            )
            return None

    @property
    def stream_id(self) -> str:
        """The id of the scoring query whose batches this writer commits."""
        if self._stream_id is None:
            self._stream_id = query_id_of(self.paths.checkpoint_dir)
        return self._stream_id

    def __call__(self, parsed: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        if not self._recovered:
            self.recover()
        promotion, _ = self.promotion_for(batch_id)
        if (promotion.version, promotion.threshold) != (
            self.promotion.version,
            self.promotion.threshold,
        ):
            log.info(
                "batch %d: scoring with %s at threshold %s (was %s at %s)",
                batch_id,
                promotion.version,
                promotion.threshold,
                self.promotion.version,
                self.promotion.threshold,
            )
        self.promotion = promotion
        record = self.recorded(batch_id)
        recorded = record.challenger
        challenger_model = None
        if recorded is not None:
            challenger_model = self._challenger_model(batch_id, recorded)
        challenger = None if challenger_model is None else recorded
        if challenger != self.challenger:
            log.info(
                "batch %d: shadow scoring with %s",
                batch_id,
                "nothing"
                if challenger is None
                else f"{challenger.version} at {challenger.threshold}",
            )
        self.challenger = challenger
        scorer = self._scorer(promotion.version)
        scored_at_ms = record.scored_at_ms
        # The one pass over the batch: read Kafka, parse, score (and score in shadow), write
        # every row once, and count what was written on the way.
        observation = Observation()
        projection = scorer.projection(promotion.threshold, promotion.version, challenger)
        scored = ledger_rows(parsed, scorer.model, projection, challenger_model, scored_at_ms)
        stage_ms: dict[str, int] = {}
        early_alerts = self._sends_early_alerts(batch_id)
        if early_alerts:
            # A small batch sends its alerts first, from a job whose scored rows stay in
            # memory for the ledger job: Spark reads, scores and counts the batch once (a
            # second read of the same DataFrame would count its input twice in the query's
            # progress). A task's alerts go out once its Kafka partition's rows are scored.
            scored = scored.persist(StorageLevel.MEMORY_ONLY)
            write_kafka(
                alert_kafka_records(ledger_alerts(scored)), self.kafka, self.kafka.topics.alerts
            )
            stage_ms["early_alerts"] = int((time.monotonic() - started) * 1000)
        try:
            ledger = scored.observe(observation, *ledger_counts())
            _, replayed = commit_batch_partition(ledger, self.paths.ledger_table, batch_id)
        finally:
            if early_alerts:
                scored.unpersist()
        stage_ms["ledger"] = int((time.monotonic() - started) * 1000)
        counts = None if replayed else dict(observation.get)
        # The shadow partition follows the record, like every output of a replayed batch: it
        # is derived from the committed ledger (which holds the shadow scores, if any).
        batch = _CommittedBatch(
            batch_id,
            promotion,
            counts,
            replayed,
            started,
            recorded,
            alerts_sent=early_alerts,
        )
        batch.stage_ms.update(stage_ms)
        # At most one batch is being delivered while the next one is scored.
        self.wait_for_delivery()
        if self.pipelined:
            self._delivery = threading.Thread(
                target=self._deliver_in_background, args=(batch,), name=f"deliver-{batch_id}"
            )
            self._delivery.start()
        else:
            self._deliver(batch)

    # -- delivering a committed batch -------------------------------------------------------

    def wait_for_delivery(self) -> None:
        """Wait until the batch being delivered is; raise what its delivery raised."""
        if self._delivery is not None:
            self._delivery.join()
            self._delivery = None
        error, self._delivery_error = self._delivery_error, None
        if error is not None:
            raise RuntimeError(f"delivering a committed micro-batch failed: {error}") from error

    @property
    def delivery_error(self) -> BaseException | None:
        """What the background delivery raised, if it failed (None while all is well)."""
        return self._delivery_error

    def recover(self) -> None:
        """Deliver every committed ledger partition whose delivery never finished.

        A batch is delivered once its batch log exists. A crash after the ledger commit and
        before that (Spark may have committed the batch's offsets meanwhile) leaves a ledger
        partition without a log: its outputs are derived again from it here, before the
        first new batch (at-least-once to Kafka, exactly once to Parquet).
        """
        self._recovered = True
        for batch_id in self.undelivered():
            record = self.recorded(batch_id)
            log.warning("batch %d was committed but not delivered: delivering it now", batch_id)
            self._deliver(
                _CommittedBatch(
                    batch_id, record.promotion, None, True, time.monotonic(), record.challenger
                )
            )

    def undelivered(self) -> list[int]:
        """Committed ledger partitions without a batch log, oldest first."""
        table = self.paths.ledger_table
        if not table.is_dir():
            return []
        ids = sorted(
            int(p.name.split("=", 1)[1])
            for p in table.iterdir()
            if p.name.startswith("batch_id=") and p.name.split("=", 1)[1].isdigit()
        )
        logs = self.paths.batch_log_dir
        return [b for b in ids if not (logs / f"batch-{b:012d}.json").is_file()]

    def _deliver_in_background(self, batch: "_CommittedBatch") -> None:
        # Its jobs carry the scoring query's ids, so Spark's event log attributes them to it.
        context = self.spark.sparkContext
        context.setLocalProperty("sql.streaming.queryId", self._query_id_for_profile())
        context.setLocalProperty("streaming.sql.batchId", str(batch.batch_id))
        try:
            self._deliver(batch)
        except BaseException as error:  # raised in the query's thread by wait_for_delivery
            log.error("delivering batch %d failed: %s", batch.batch_id, error)
            self._delivery_error = error

    def _query_id_for_profile(self) -> str:
        try:
            return self.stream_id
        except RuntimeError:
            return ""

    def _deliver(self, batch: "_CommittedBatch") -> None:
        """Everything but the ledger, derived from the committed ledger partition."""
        batch_id = batch.batch_id
        committed = read_batch_partition(
            self.spark, self.paths.ledger_table, batch_id, LEDGER_TABLE_SCHEMA
        )
        counts = batch.counts
        if counts is None:  # written before a crash: count what was committed
            counts = committed.agg(*ledger_counts()).first().asDict()
        counts = {name: int(value or 0) for name, value in counts.items()}
        # A replay derives the same rows from the same partition. The steps are independent;
        # Kafka (what someone waits for) is started first.
        topics = self.kafka.topics
        records = [kpi_partial_records(committed, self.stream_id, topics.kpi_partials)]
        steps: dict[str, Callable[[], object]] = {}
        if counts["alerts"]:
            alert_rows = ledger_alerts(committed)
            if self.delivers_alerts and not batch.alerts_sent:
                records.append(alert_kafka_records(alert_rows, topics.alerts))
            steps["alerts"] = lambda: commit_batch_partition(
                alert_rows.coalesce(1), self.paths.alerts_table, batch_id
            )
        if counts["invalid"]:
            letters = ledger_dead_letters(committed)
            records.append(dead_letter_kafka_records(letters, topics.dead_letter))
            steps["dead_letters"] = lambda: commit_batch_partition(
                letters.coalesce(1), self.paths.quarantine_table, batch_id
            )
        if batch.challenger is not None:
            # Derived from the ledger like the alerts: a replay writes the same rows (none if
            # the challenger's model could not be loaded when the ledger was written).
            shadow_rows = ledger_shadow(committed)
            steps["shadow"] = lambda: commit_batch_partition(
                shadow_rows.coalesce(1), self.paths.shadow_table, batch_id
            )
        kafka_records = reduce(DataFrame.unionByName, records).coalesce(1)
        steps = {"kafka": lambda: write_kafka(kafka_records, self.kafka), **steps}
        batch.stage_ms.update(run_concurrently(steps))
        stats = BatchStats(
            batch_id=batch_id,
            input_rows=counts["scored"] + counts["invalid"],
            scored=counts["scored"],
            alerts=counts["alerts"],
            invalid=counts["invalid"],
            model_version=batch.promotion.version,
            threshold=batch.promotion.threshold,
            duration_ms=int((time.monotonic() - batch.started) * 1000),
            replayed=batch.replayed,
            stage_ms=batch.stage_ms,
            challenger_version=None if batch.challenger is None else batch.challenger.version,
        )
        write_json_atomic(self.paths.batch_log_dir / f"batch-{batch_id:012d}.json", asdict(stats))
        with self._lock:
            self.totals.add(stats)
        log.info(
            "batch %d: %d scored, %d alerts, %d invalid in %d ms%s",
            batch_id,
            stats.scored,
            stats.alerts,
            stats.invalid,
            stats.duration_ms,
            " (replayed)" if batch.replayed else "",
        )
        if self.on_batch is not None:
            self.on_batch(stats)


@dataclass(frozen=True)
class _BatchRecord:
    """A batch's record (``batch-N.json``), written before anything of the batch is."""

    promotion: Promotion
    challenger: Promotion | None
    """Scored in shadow beside the promotion (None: none was named)."""
    scored_at_ms: int
    """The batch's scoring time (epoch ms): every alert's ``scored_at``. A record written
    before scoring times were recorded gives the time it was written."""

    @classmethod
    def read(cls, path: Path) -> "_BatchRecord":
        values = json.loads(path.read_text())
        challenger, scored_at_ms = values.get("challenger"), values.get("scored_at_ms")
        return cls(
            Promotion.from_dict(values),
            None if challenger is None else Promotion.from_dict(challenger),
            int(path.stat().st_mtime * 1000) if scored_at_ms is None else int(scored_at_ms),
        )


@dataclass
class _CommittedBatch:
    """A micro-batch whose ledger is committed, on its way to its other outputs."""

    batch_id: int
    promotion: Promotion
    counts: dict | None
    """Observed while the ledger was written; None when it was not (a replay, a recovery)."""
    replayed: bool
    started: float
    challenger: Promotion | None = None
    """The challenger recorded for the batch: its ledger holds the shadow scores."""
    alerts_sent: bool = False
    """Its alerts are on Kafka already (the early alerts of a small batch)."""
    stage_ms: dict[str, int] = field(default_factory=dict)


def _explanation(model: PipelineModel, version: str) -> Column | None:
    """The alert explanation of ``model``; None (alerts without one) if it has no recipe."""
    try:
        return top_features(model)
    except UnexplainableModelError as error:
        log.warning("model %s: alerts carry no explanation (%s)", version, error)
        return None


def query_id_of(checkpoint_dir: Path) -> str:
    """The id of the streaming query that owns ``checkpoint_dir`` (Spark's ``metadata`` file).

    Spark writes it when the query first starts and keeps it across restarts from the
    checkpoint, so it names one query's lineage.
    """
    metadata = checkpoint_dir / "metadata"
    try:
        return json.loads(metadata.read_text().splitlines()[0])["id"]
    except (OSError, ValueError, KeyError, IndexError) as error:
        raise RuntimeError(
            f"{metadata} holds no query id ({error}): the scoring query has not started on "
            "this checkpoint"
        ) from None


def read_transactions_stream(
    spark: SparkSession, kafka: KafkaSettings, settings: StreamSettings
) -> DataFrame:
    """The Kafka ``transactions`` topic as a streaming DataFrame of raw records."""
    return (
        spark.readStream.format("kafka")
        .options(**kafka.spark_options())
        .option("subscribe", kafka.topics.transactions)
        .option("startingOffsets", settings.starting_offsets)
        .option("maxOffsetsPerTrigger", str(settings.max_offsets_per_trigger))
        .options(**settings.consumer_options())
        # Losing data (a deleted topic, expired offsets) must stop the query, not be skipped.
        .option("failOnDataLoss", "true")
        .load()
    )


def read_transactions_batch(
    spark: SparkSession,
    kafka: KafkaSettings,
    settings: StreamSettings = StreamSettings(),
    ending_offsets: dict[str, int] | None = None,
) -> DataFrame:
    """The ``transactions`` topic read in batch, like the stream reads it.

    Same source columns and consumer settings; from the earliest offsets, and to
    ``ending_offsets`` (partition -> exclusive end offset) when given.
    """
    reader = (
        spark.read.format("kafka")
        .options(**kafka.spark_options())
        .option("subscribe", kafka.topics.transactions)
        .options(**settings.consumer_options())
    )
    if ending_offsets is not None:
        ending = json.dumps({kafka.topics.transactions: ending_offsets})
        reader = reader.option("endingOffsets", ending)
    return reader.load()


def start_scoring_query(
    spark: SparkSession,
    kafka: KafkaSettings,
    paths: StreamPaths,
    writer: ScoringBatchWriter,
    settings: StreamSettings,
    bounded: bool,
) -> StreamingQuery:
    """Start the scoring query; ``bounded`` drains what is available now, then stops.

    The streaming plan reads and parses (:func:`parse_transactions`); ``writer`` gets the
    parsed rows of each micro-batch.
    """
    guard_checkpoint(paths.checkpoint_dir, settings.query_name, kafka.topics.transactions)
    stream = (
        parse_transactions(read_transactions_stream(spark, kafka, settings))
        .writeStream.queryName(settings.query_name)
        .option("checkpointLocation", str(paths.checkpoint_dir))
        .foreachBatch(writer)
    )
    return start_with_trigger(stream, bounded, settings.trigger_interval)
