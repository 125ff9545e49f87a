"""The live replay: the real transactions into ``transactions``, paced, resumable, endless.

A live system needs a stream that keeps flowing, restarts where it stopped and never feeds
the stream the same transaction twice:

- **Resumable.** The replay position is the number of messages the ``transactions`` topic
  has ever received (the sum of its end offsets; retention does not lower them): a second
  ``make live`` on the same broker state continues with the next row.
- **Endless, in laps.** Position ``p`` is row ``p % N`` of the audited table (``N`` rows)
  in lap ``p // N``. Lap 0 sends the rows as they are; lap ``k`` gives each row the id
  ``<transaction_id>.<k>`` and an event time ``k`` periods later (a period is the data's
  event-time span plus a minute), so ids stay unique and event time keeps moving forward.
- **Compressed event time.** The 2013 data holds about 1.65 transactions per second of
  event time; replayed at ``rate`` transactions per wall-clock second, event time passes
  about ``rate / 1.65`` times faster than wall time (about 120x at the default 200 tx/s):
  1-minute KPI windows close every half second and the 10-minute watermark is a few
  seconds behind, so alerts, KPI windows and the digest move within a minute.
"""

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from fraud_assets.core.settings import KafkaSettings
from fraud_assets.kafka.io import end_offsets
from fraud_assets.kafka.producer import ReplayError, replay

log = logging.getLogger(__name__)

LAP_GAP = timedelta(minutes=1)
"""Event time between the last transaction of a lap and the first of the next."""


def lap_position(position: int, rows: int) -> tuple[int, int]:
    """``(lap, row offset)`` of replay position ``position`` in a table of ``rows`` rows."""
    if rows <= 0:
        raise ValueError("the audited table has no rows to replay")
    return divmod(position, rows)


def lap_transform(lap: int, period: timedelta) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The row rewrite of lap ``lap``: the identity for lap 0, fresh ids and later times after."""
    if lap == 0:
        return lambda row: row

    def shifted(row: dict[str, Any]) -> dict[str, Any]:
        return {
            **row,
            "transaction_id": f"{row['transaction_id']}.{lap}",
            "event_time": row["event_time"] + lap * period,
        }

    return shifted


def table_shape(audited_parquet: Path) -> tuple[int, timedelta]:
    """Rows of the audited table and its lap period (event-time span plus :data:`LAP_GAP`)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    table = ds.dataset(str(audited_parquet), format="parquet").to_table(columns=["event_time"])
    if table.num_rows == 0:
        raise ReplayError(f"{audited_parquet} has no rows to replay")
    bounds = pc.min_max(table["event_time"]).as_py()
    return table.num_rows, bounds["max"] - bounds["min"] + LAP_GAP


def replay_position(kafka: KafkaSettings) -> int:
    """How many messages ``transactions`` has ever received: where the live replay resumes."""
    return sum(end_offsets(kafka, kafka.topics.transactions, timeout_s=30.0).values())


class LiveReplay(threading.Thread):
    """A background thread replaying at ``rate`` tx/s from the topic's position until stopped.

    ``sent`` counts the acknowledged messages of this session; ``error`` holds what stopped
    the replay early (a broker that went away), None otherwise.
    """

    def __init__(self, audited_parquet: Path, kafka: KafkaSettings, rate: float) -> None:
        super().__init__(name="live-replay", daemon=True)
        self.audited_parquet = audited_parquet
        self.kafka = kafka
        self.rate = rate
        self.start_position = replay_position(kafka)
        self.rows, self.period = table_shape(audited_parquet)
        self.sent = 0
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the replay to stop after its current send, and wait for it."""
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout_s)

    def run(self) -> None:
        position = self.start_position
        try:
            while not self._stop_event.is_set():
                lap, offset = lap_position(position, self.rows)
                result = replay(
                    self.audited_parquet,
                    self.kafka,
                    self.kafka.topics.transactions,
                    rate=self.rate,
                    progress=False,
                    offset=offset,
                    transform=lap_transform(lap, self.period),
                    stop_requested=self._stop_event.is_set,
                )
                position += result.sent
                self.sent += result.sent
                if not self._stop_event.is_set():
                    log.debug("replay: lap %d done; lap %d starts (fresh ids)", lap, lap + 1)
        except Exception as error:  # reported by the runner; the rest keeps running
            self.error = error
            log.warning("replay stopped: %s", error)
