"""One run of the scoring stream: its queries, started, watched and stopped together.

A run is the micro-batch scoring query (:mod:`fraud_assets.core.stream`) and the KPI query
over its partials (:mod:`fraud_assets.core.kpis`); with real-time delivery, also the
real-time alert query (:mod:`fraud_assets.core.realtime`), started first. The Dagster op,
the CLI, the demo and the benchmark all run the stream through :class:`ScoringRun`.

Bounded (tests, demos, backfills), a run processes what is in ``transactions`` when it
starts and stops: the scoring query drains it (``availableNow``), the KPI query then closes
every window the final watermark allows, and a real-time query stops once a checkpoint of
its covers the same offsets. Unbounded, it runs until stopped or until a query fails. Either
way every query is stopped on the way out (at a micro-batch boundary), also on Ctrl-C or a
terminated run; no checkpoint is ever deleted.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from fraud_assets.core.kpis import KpiBatchWriter, KpiSettings, start_kpi_query
from fraud_assets.core.paths import StreamPaths
from fraud_assets.core.queries import committed_offsets, reached
from fraud_assets.core.realtime import (
    BOUNDED_CHECKPOINT_INTERVAL,
    RealtimeSettings,
    check_realtime_model,
    check_task_slots,
    start_realtime_alert_query,
)
from fraud_assets.core.registry import ModelRegistry, Promotion
from fraud_assets.core.settings import KafkaSettings
from fraud_assets.core.stream import ScoringBatchWriter, StreamSettings, start_scoring_query
from fraud_assets.kafka.io import end_offsets

log = logging.getLogger(__name__)

MICROBATCH = "microbatch"
REALTIME = "realtime"
DELIVERY_MODES = (MICROBATCH, REALTIME)
"""How alerts reach ``fraud_alerts``: from each committed micro-batch (seconds), or from
Spark's real-time mode (milliseconds); the tables, dead letters and KPIs are the micro-batch
query's in both."""


class DeliveryModeError(ValueError):
    """The alert delivery setting names no known mode."""


REALTIME_CATCH_UP_S = 120.0
"""How long a bounded run waits, once the micro-batch query is done, for the real-time query
to checkpoint past every message that was there at the start."""


@dataclass(frozen=True)
class RunSettings:
    """What one run does: bounded or not, how alerts are delivered, each query's settings."""

    bounded: bool = False
    delivery: str = MICROBATCH
    stream: StreamSettings = StreamSettings()
    kpi: KpiSettings = KpiSettings()
    realtime: RealtimeSettings = RealtimeSettings()

    def __post_init__(self) -> None:
        if self.delivery not in DELIVERY_MODES:
            raise DeliveryModeError(
                f"unknown alert delivery {self.delivery!r}: set FRAUD_ALERT_DELIVERY (or the "
                f"op config alert_delivery) to one of {', '.join(DELIVERY_MODES)}"
            )

    @property
    def is_realtime(self) -> bool:
        return self.delivery == REALTIME


@dataclass
class ScoringRun:
    """The queries of one run (see the module docstring); :meth:`run` starts and waits.

    ``writer`` is the scoring query's batch writer (built with ``delivers_alerts`` False for
    real-time delivery); ``registry``, when given, is followed by the real-time query too:
    a promotion or threshold change restarts it with the new version.
    """

    spark: SparkSession
    kafka: KafkaSettings
    paths: StreamPaths
    writer: ScoringBatchWriter
    settings: RunSettings
    registry: ModelRegistry | None = None
    scoring: StreamingQuery | None = None
    kpis: StreamingQuery | None = None
    realtime: StreamingQuery | None = None
    kpi_writer: KpiBatchWriter | None = None
    realtime_promotion: Promotion | None = None
    realtime_restarts: int = 0
    _finished: set[int] = field(default_factory=set)
    """Queries (by id) that ended as a bounded run expects."""

    @property
    def queries(self) -> list[StreamingQuery]:
        return [q for q in (self.realtime, self.scoring, self.kpis) if q is not None]

    def run(
        self,
        on_poll: Callable[[], None] | None = None,
        poll_seconds: float = 1.0,
        stop_requested: Callable[[], bool] = lambda: False,
    ) -> None:
        """Start every query, wait as the settings say, and stop them all on the way out.

        An unbounded run returns once ``stop_requested()`` is true.

        Raises:
            RealtimeSetupError: Real-time delivery cannot run (model, task slots), before
                any query starts, or the registry promoted a model it cannot run.
            RuntimeError: A query failed (the others were stopped).
        """
        try:
            targets = self._start()
            if self.settings.bounded:
                self._wait(self.scoring, lambda: self.scoring.isActive, on_poll, poll_seconds)
                # The last batch's alerts, dead letters and KPI partials, before the KPI query.
                self.writer.wait_for_delivery()
                self.kpis, self.kpi_writer = self._start_kpis()
                self._wait(self.kpis, lambda: self.kpis.isActive, on_poll, poll_seconds)
                if self.realtime is not None:
                    self._wait_for_realtime(targets, on_poll, poll_seconds)
            else:
                self._wait(None, lambda: not stop_requested(), on_poll, poll_seconds)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop every query that is still running (each at a batch boundary).

        The batch the scoring writer is still delivering is delivered first when it can be;
        if not (a failure, a kill), the next run delivers it from its committed ledger.
        """
        try:
            for query in self.queries:
                if query.isActive:
                    query.stop()
        finally:
            try:
                self.writer.wait_for_delivery()
            except RuntimeError as error:
                log.error("%s (the next run delivers it from the ledger)", error)

    # -- starting ---------------------------------------------------------------------------

    def _start(self) -> dict[int, int]:
        topic = self.kafka.topics.transactions
        # What a bounded run must cover; for real-time delivery also the partition count.
        targets = end_offsets(self.kafka, topic)
        if self.settings.is_realtime:
            check_realtime_model(self.writer.model, self.writer.promotion.version)
            check_task_slots(self.spark, len(targets))
            self._start_realtime(self.writer.promotion)
        self.scoring = start_scoring_query(
            self.spark,
            self.kafka,
            self.paths,
            self.writer,
            self.settings.stream,
            bounded=self.settings.bounded,
        )
        if not self.settings.bounded:
            self.kpis, self.kpi_writer = self._start_kpis()
        return targets

    def _start_kpis(self) -> tuple[StreamingQuery, KpiBatchWriter]:
        return start_kpi_query(
            self.spark,
            self.kafka,
            self.paths,
            self.settings.kpi,
            bounded=self.settings.bounded,
            stream_id=self.scoring.id,
        )

    def _start_realtime(self, promotion: Promotion) -> None:
        realtime = self.settings.realtime
        if self.settings.bounded:
            realtime = RealtimeSettings(BOUNDED_CHECKPOINT_INTERVAL, realtime.query_name)
        # A fresh real-time checkpoint starts where the micro-batch query stopped delivering:
        # what it committed had its alerts produced already, what it did not will not.
        starting = committed_offsets(self.paths.checkpoint_dir)
        self.realtime = start_realtime_alert_query(
            self.spark,
            self.kafka,
            self.paths.realtime_checkpoint_dir,
            self.writer.model_of(promotion.version),
            promotion,
            realtime,
            starting_offsets=starting or self.settings.stream.starting_offsets,
        )
        self.realtime_promotion = promotion
        log.info(
            "real-time alerts with %s at threshold %s (checkpoint every %s)",
            promotion.version,
            promotion.threshold,
            realtime.checkpoint_interval,
        )

    # -- waiting ----------------------------------------------------------------------------

    def _wait(
        self,
        ending: StreamingQuery | None,
        running: Callable[[], bool],
        on_poll: Callable[[], None] | None,
        poll_s: float,
    ) -> None:
        """Wait while ``running()``; raise as soon as a query fails or stops unexpectedly.

        ``ending`` is the query a bounded run waits for (it ends by itself); any other
        query that stops on its own, or any failure, ends the wait with an error.
        """
        while True:
            self._check(ending)
            if not running():
                if ending is not None:
                    self._finished.add(id(ending))
                return
            self._follow_promotion()
            (ending or self.queries[0]).awaitTermination(poll_s)
            if on_poll is not None:
                on_poll()

    def _check(self, ending: StreamingQuery | None) -> None:
        if self.writer.delivery_error is not None:
            self.writer.wait_for_delivery()  # raises it
        for query in self.queries:
            error = query.exception()
            if error is not None:
                raise RuntimeError(f"streaming query {query.name} failed: {error}") from None
            if query is not ending and not query.isActive and id(query) not in self._finished:
                raise RuntimeError(f"streaming query {query.name} stopped on its own")

    def _wait_for_realtime(
        self, targets: dict[int, int], on_poll: Callable[[], None] | None, poll_s: float
    ) -> None:
        topic = self.kafka.topics.transactions
        deadline = time.monotonic() + REALTIME_CATCH_UP_S
        self._wait(
            None,
            lambda: (
                not reached(self.realtime.lastProgress, topic, targets)
                and time.monotonic() < deadline
            ),
            on_poll,
            poll_s,
        )
        if not reached(self.realtime.lastProgress, topic, targets):
            raise RuntimeError(
                f"the real-time query did not checkpoint past {targets} of {topic} within "
                f"{REALTIME_CATCH_UP_S:.0f} s of the micro-batch query"
            )

    def _follow_promotion(self) -> None:
        """Restart the real-time query when the registry promotes another version/threshold.

        The micro-batch writer applies a promotion from its next batch by itself; a real-time
        query has its model in its plan, so it is restarted (from its checkpoint: the
        messages since its last checkpoint are scored again by the new version).
        """
        if self.realtime is None or self.registry is None:
            return
        try:
            wanted = self.registry.promoted()
        except (OSError, ValueError, TypeError) as error:
            log.error("cannot read the promotion pointer (%s): real-time query unchanged", error)
            return
        current = self.realtime_promotion
        if wanted is None or (wanted.version, wanted.threshold) == (
            current.version,
            current.threshold,
        ):
            return
        check_realtime_model(self.writer.model_of(wanted.version), wanted.version)
        log.info(
            "promotion changed to %s at %s: restarting the real-time query",
            wanted.version,
            wanted.threshold,
        )
        self.realtime.stop()
        self._start_realtime(wanted)
        self.realtime_restarts += 1
