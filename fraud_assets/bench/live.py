"""Live runs: each pipeline running while the paced generator offers load to it.

Per pipeline, one run on its own topics:

1. it is started and proven live (an alerting message sent until its alert comes back);
2. an untimed warm-up at the first rate (class loading, JIT, code generation);
3. for the micro-batch pipelines that have a fixed-cost figure, a trickle of a few messages
   a second: the median trigger duration of its micro-batches of at most 10 rows is what
   a micro-batch costs before its data;
4. each offered rate for its window: every ``alert_every``-th message is a transaction the
   model alerts on; latency is the alert record's broker timestamp minus the input's
   CreateTime, per timed transaction (:func:`fraud_assets.bench.latency.latency_summary`).

The paced generator is a separate process (``fraud_assets.bench.generator``), so it shares
neither GIL nor CPU accounting with the pipeline. With real-time delivery, the micro-batch
query's Kafka lag is sampled every second while the rate is offered: it must keep up.
"""

import itertools
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fraud_assets.bench import generator
from fraud_assets.bench.latency import ResourceSampler, first_latencies, latency_summary
from fraud_assets.core.queries import kafka_lag
from fraud_assets.core.settings import KafkaSettings
from fraud_assets.kafka.io import produce_messages

Rows = tuple[list[dict], list[dict]]
"""Audited rows the model alerts on, and rows it never alerts on (producer rows)."""


@dataclass
class LiveHandle:
    """A pipeline running live, as the harness drives it."""

    kafka: KafkaSettings
    stop: Callable[[], None]
    check: Callable[[], None] = lambda: None
    """Raises if the pipeline failed."""
    root_pid: int = 0
    exclude: tuple[str, ...] = ()
    fixed_cost_query: Any = None
    """The query whose small micro-batches give the fixed cost (None: not measured)."""
    lag_of: Callable[[], dict[str, int] | None] | None = None
    """The micro-batch query's lag beside a real-time query (None: not sampled)."""
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LivePlan:
    """What one live run offers."""

    rates: tuple[int, ...]
    seconds_per_rate: float
    warm_up_seconds: float
    fixed_cost_seconds: float = 0.0
    fixed_cost_rate: float = 5.0
    alert_every: int = 50


def latency_messages(
    rate: float, seconds: float, rows: Rows, prefix: str, alert_every: int
) -> tuple[list[generator.Message], set[bytes]]:
    """``rate * seconds`` messages: every ``alert_every``-th an alerting row, under new ids."""
    alert_rows, quiet_rows = rows
    count = max(1, int(rate * seconds))
    chosen, ids, timed = [], [], set()
    for i in range(count):
        tid = f"{prefix}-{i:07d}"
        if i % alert_every == 0:
            chosen.append(alert_rows[(i // alert_every) % len(alert_rows)])
            timed.add(tid.encode())
        else:
            chosen.append(quiet_rows[i % len(quiet_rows)])
        ids.append(tid)
    return generator.encode_rows(chosen, ids), timed


class TopicTail:
    """A topic's records from the moment this is created, read incrementally.

    A latency window reads only what arrived since it began, once (the bare copies write
    every message: 1.2 million records in a 2-minute window at 10k tx/s, which re-reading
    the whole topic with kafka-python after every window could not keep up with).
    confluent-kafka, the generator's client (the ``bench`` extra), reads them.
    """

    def __init__(self, bootstrap_servers: str, topic: str, timeout_s: float = 30.0):
        from confluent_kafka import Consumer, TopicPartition

        self.topic = topic
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": f"bench-tail-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )
        metadata = self._consumer.list_topics(topic, timeout=timeout_s)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            self.close()
            raise RuntimeError(f"topic {topic} is missing on {bootstrap_servers}")
        starts = []
        for partition in sorted(metadata.topics[topic].partitions):
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s
            )
            starts.append(TopicPartition(topic, partition, high))
        self._consumer.assign(starts)

    def read(self, wanted: set[str], timeout_s: float) -> list[tuple[str, int]]:
        """``(key, broker timestamp ms)`` of the records keyed in ``wanted``.

        Reads until every key of ``wanted`` arrived or ``timeout_s`` passed.
        """
        deadline = time.monotonic() + timeout_s
        pairs: list[tuple[str, int]] = []
        seen: set[str] = set()
        while not wanted <= seen and time.monotonic() < deadline:
            for message in self._consumer.consume(num_messages=10_000, timeout=0.5):
                if message.error() is not None or message.key() is None:
                    continue
                key = message.key().decode()
                if key in wanted:
                    pairs.append((key, message.timestamp()[1]))
                    seen.add(key)
        return pairs

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> "TopicTail":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def paced_run(
    handle: LiveHandle,
    work_dir,
    rate: float,
    seconds: float,
    rows: Rows,
    prefix: str,
    alert_every: int,
) -> tuple[dict, dict]:
    """Offer ``rate`` tx/s for ``seconds``; latency summary and the generator's result."""
    kafka = handle.kafka
    messages, timed = latency_messages(rate, seconds, rows, prefix, alert_every)
    work_dir.mkdir(parents=True, exist_ok=True)
    job, result = work_dir / f"{prefix}.pkl", work_dir / f"{prefix}.json"
    generator.write_job(job, messages, timed)
    del messages
    command = [
        sys.executable,
        "-m",
        "fraud_assets.bench.generator",
        "--bootstrap-servers",
        kafka.bootstrap_servers,
        "--topic",
        kafka.topics.transactions,
        "--job",
        str(job),
        "--rate",
        str(rate),
        "--result",
        str(result),
    ]
    lag = LagSampler(handle.lag_of) if handle.lag_of is not None else None
    with TopicTail(kafka.bootstrap_servers, kafka.topics.alerts) as tail:
        if lag is not None:
            lag.start()
        try:
            subprocess.run(command, check=True, timeout=seconds * 4 + 60)
        finally:
            if lag is not None:
                lag.stop()
        job.unlink()
        produced = json.loads(result.read_text())
        created = produced["create_ms"]
        alerts = tail.read(set(created), max(30.0, seconds))
    first = first_latencies(created, alerts)
    summary = latency_summary(len(created), first)
    # Every timed alert's (send time, latency), for a timeline of where the slow ones fall.
    (work_dir / f"{prefix}-latencies.json").write_text(json.dumps(first))
    if lag is not None:
        summary["microbatch_lag"] = lag.summary()
    return summary, produced["result"]


def wait_until_live(handle: LiveHandle, alert_rows: list[dict], timeout_s: float = 300.0) -> None:
    """Send alerting messages until one comes back: the pipeline is live end to end."""
    kafka = handle.kafka
    deadline = time.monotonic() + timeout_s
    sent: set[str] = set()
    with TopicTail(kafka.bootstrap_servers, kafka.topics.alerts) as tail:
        for round_ in itertools.count():
            handle.check()
            ids = [f"live-{round_}-{i}" for i in range(5)]
            messages = generator.encode_rows(alert_rows[:5], ids)
            produce_messages(kafka.bootstrap_servers, kafka.topics.transactions, messages)
            sent |= set(ids)
            # An alert of any round counts (a slow first round may answer during the next).
            if tail.read(sent, 10.0):
                return
            if time.monotonic() > deadline:
                topic = kafka.topics.alerts
                raise RuntimeError(f"no alert came back from {topic} in {timeout_s} s")


class LagSampler:
    """The micro-batch query's Kafka lag, sampled every second in a background thread."""

    def __init__(self, lag_of: Callable[[], dict[str, int] | None], interval_s: float = 1.0):
        self.lag_of = lag_of
        self.interval_s = interval_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-lag", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                lag = self.lag_of()
            except Exception:  # a sample missed is not a failure of the pipeline
                continue
            if lag is not None:
                self.samples.append(sum(lag.values()))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def summary(self) -> dict:
        if not self.samples:
            return {"samples": 0}
        return {
            "samples": len(self.samples),
            "max": max(self.samples),
            "last": self.samples[-1],
            "mean": round(sum(self.samples) / len(self.samples), 1),
        }


def fixed_cost(handle: LiveHandle, work_dir, plan: LivePlan, rows: Rows) -> dict:
    """Median trigger duration of the query's micro-batches of 1 to 10 rows under a trickle."""
    from fraud_assets.bench.pipelines import epoch, progress_events

    started = time.time()
    paced_run(handle, work_dir, plan.fixed_cost_rate, plan.fixed_cost_seconds, rows, "fixed", 1)
    small = [
        e
        for e in progress_events(handle.fixed_cost_query)
        if epoch(e["timestamp"]) >= started and 0 < e.get("numInputRows", 0) <= 10
    ]
    durations = sorted(e["durationMs"]["triggerExecution"] for e in small)
    if not durations:
        return {"batches": 0, "median_ms": None}
    middle = len(durations) // 2
    median = (
        durations[middle] if len(durations) % 2 else (durations[middle - 1] + durations[middle]) / 2
    )
    return {
        "batches": len(durations),
        "median_ms": float(median),
        "min_ms": durations[0],
        "max_ms": durations[-1],
        "window_start_ms": int(started * 1000),
    }


def run_live(handle: LiveHandle, work_dir, plan: LivePlan, rows: Rows) -> dict[str, Any]:
    """Warm-up, fixed cost (if measured), then every rate; figures per point."""
    out: dict[str, Any] = {}
    wait_until_live(handle, rows[0])
    if plan.warm_up_seconds > 0:
        warm, _ = paced_run(
            handle, work_dir, plan.rates[0], plan.warm_up_seconds, rows, "warm", plan.alert_every
        )
        out["warm_up"] = warm | {"offered_tps": plan.rates[0]}
    if handle.fixed_cost_query is not None and plan.fixed_cost_seconds > 0:
        out["fixed_cost"] = fixed_cost(handle, work_dir, plan, rows)
    for rate in plan.rates:
        started_ms = int(time.time() * 1000)
        with ResourceSampler(handle.root_pid, handle.exclude) as sampler:
            summary, produced = paced_run(
                handle, work_dir, rate, plan.seconds_per_rate, rows, f"r{rate}", plan.alert_every
            )
        handle.check()
        out[str(rate)] = summary | {
            "offered_tps": rate,
            "seconds": plan.seconds_per_rate,
            "window_start_ms": started_ms,
            "window_end_ms": int(time.time() * 1000),
            "generator_achieved_tps": round(produced["rate_tps"], 1),
            "resources": sampler.usage.as_dict(),
        }
    return out


def lag_of(query_of: Callable[[], Any], kafka: KafkaSettings) -> Callable[[], dict | None]:
    """A lag function for :class:`LagSampler` over a (possibly not yet started) query."""

    def lag() -> dict[str, int] | None:
        query = query_of()
        return None if query is None else kafka_lag(query.lastProgress, kafka)

    return lag
