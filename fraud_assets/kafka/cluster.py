"""A multi-node Apache Kafka cluster (KRaft) on one machine, built from embedded brokers.

Every node is an :class:`~fraud_assets.kafka.broker.EmbeddedKafka` in combined
``broker,controller`` mode with its own state folder (``<state_dir>/node-<id>``) and ports;
the nodes share one cluster id and one static controller quorum, so the cluster keeps
serving (and electing partition leaders) while a majority of its nodes runs. With the
defaults (3 nodes, replication factor 3, ``min.insync.replicas=2``) an acknowledged write
(``acks=all``) is on at least two brokers, and losing one broker loses nothing.

It exists to test what a production cluster does on failure (a broker killed mid-stream),
and to show the settings such a cluster needs; production clusters are run by their own
tooling, and fraud_assets only needs their bootstrap list.
"""

import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from fraud_assets.kafka.admin import TopicSpec
from fraud_assets.kafka.broker import (
    BrokerSettings,
    BrokerStartError,
    EmbeddedKafka,
    free_port,
    new_cluster_id,
    read_properties,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterSettings:
    """How to run a local multi-node cluster.

    Attributes:
        state_dir: Parent folder of the nodes' state folders (``node-1``, ``node-2``, ...).
        jars_dir: Folder of the broker jars (as for a single broker).
        nodes: Number of combined broker+controller nodes (odd: a quorum is a majority).
        replication_factor: Replicas of every topic, internal ones included.
        min_insync_replicas: Replicas that must have a write before ``acks=all`` succeeds.
        host: Address every node listens on and advertises.
        heap: JVM heap of each node.
        jvm_options: More JVM options for each node.
        extra_properties: More ``server.properties`` entries for every node.
    """

    state_dir: Path
    jars_dir: Path
    nodes: int = 3
    replication_factor: int = 3
    min_insync_replicas: int = 2
    host: str = "127.0.0.1"
    heap: str = "384m"
    jvm_options: tuple[str, ...] = ()
    extra_properties: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError("a cluster needs at least one node")
        if not 1 <= self.min_insync_replicas <= self.replication_factor <= self.nodes:
            raise ValueError(
                "need 1 <= min_insync_replicas <= replication_factor <= nodes, got "
                f"{self.min_insync_replicas}, {self.replication_factor}, {self.nodes}"
            )

    def replication_properties(self) -> tuple[tuple[str, str], ...]:
        """``server.properties`` entries that make every topic (internal ones too) replicated."""
        factor = str(self.replication_factor)
        min_isr = str(self.min_insync_replicas)
        return (
            ("default.replication.factor", factor),
            ("min.insync.replicas", min_isr),
            ("offsets.topic.replication.factor", factor),
            ("transaction.state.log.replication.factor", factor),
            ("transaction.state.log.min.isr", min_isr),
            ("share.coordinator.state.topic.replication.factor", factor),
            ("share.coordinator.state.topic.min.isr", min_isr),
            # Never elect a replica that missed acknowledged writes: losing a broker must
            # not lose alerts.
            ("unclean.leader.election.enable", "false"),
        )


def node_settings(settings: ClusterSettings) -> list[BrokerSettings]:
    """The settings of every node: ports, quorum and cluster id, kept for the folder's life.

    Ports and the cluster id are chosen on the first call and stored in
    ``<state_dir>/cluster.properties``, so a restarted cluster finds its formatted storage
    and its quorum again.
    """
    record = settings.state_dir / "cluster.properties"
    stored = read_properties(record) if record.exists() else {}
    if stored and int(stored.get("nodes", "0")) != settings.nodes:
        raise BrokerStartError(
            f"{settings.state_dir} holds a {stored['nodes']}-node cluster, not "
            f"{settings.nodes} nodes: use another state folder"
        )
    ports: list[tuple[int, int]] = []
    taken: set[int] = set()
    for node_id in range(1, settings.nodes + 1):
        if stored:
            port = int(stored[f"node.{node_id}.port"])
            controller_port = int(stored[f"node.{node_id}.controller.port"])
        else:
            port, controller_port = (_fresh_port(settings.host, taken) for _ in range(2))
        ports.append((port, controller_port))
    cluster_id = stored.get("cluster.id") or new_cluster_id()
    if not stored:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        lines = [f"cluster.id={cluster_id}", f"nodes={settings.nodes}"]
        for node_id, (port, controller_port) in enumerate(ports, start=1):
            lines += [
                f"node.{node_id}.port={port}",
                f"node.{node_id}.controller.port={controller_port}",
            ]
        record.write_text("\n".join(lines) + "\n", encoding="utf-8")
    voters = ",".join(
        f"{node_id}@{settings.host}:{controller_port}"
        for node_id, (_, controller_port) in enumerate(ports, start=1)
    )
    properties = (*settings.replication_properties(), *settings.extra_properties)
    return [
        BrokerSettings(
            state_dir=settings.state_dir / f"node-{node_id}",
            jars_dir=settings.jars_dir,
            host=settings.host,
            port=port,
            controller_port=controller_port,
            heap=settings.heap,
            node_id=node_id,
            extra_properties=properties,
            jvm_options=settings.jvm_options,
            controller_quorum_voters=voters,
            cluster_id=cluster_id,
        )
        for node_id, (port, controller_port) in enumerate(ports, start=1)
    ]


def _fresh_port(host: str, taken: set[int]) -> int:
    port = free_port(host)
    while port in taken:
        port = free_port(host)
    taken.add(port)
    return port


class KafkaCluster:
    """A local multi-node KRaft cluster; every node is an :class:`EmbeddedKafka`.

    Example::

        with KafkaCluster(ClusterSettings(state_dir, jars_dir)) as cluster:
            ensure_topics(cluster.bootstrap_servers, cluster.replicated(specs))
            cluster.nodes[1].kill()  # the cluster keeps serving

    Args:
        settings: Nodes, replication and folders.
        tie_to_parent: As for :class:`EmbeddedKafka`: the JVMs die with the Python thread
            that started them.
    """

    def __init__(self, settings: ClusterSettings, *, tie_to_parent: bool = True) -> None:
        self.settings = settings
        self.nodes = [
            EmbeddedKafka(node, tie_to_parent=tie_to_parent) for node in node_settings(settings)
        ]

    @property
    def bootstrap_servers(self) -> str:
        """Every node's client address, comma-separated (clients need only one alive)."""
        return ",".join(node.settings.bootstrap_servers for node in self.nodes)

    def start(self, timeout_s: float = 90.0) -> "KafkaCluster":
        """Launch every node, then wait until each serves metadata.

        Raises:
            BrokerStartError: A node failed to start; every node this call launched is
                stopped before raising.
        """
        try:
            for node in self.nodes:
                node.launch()
            for node in self.nodes:
                node.wait_until_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        log.info("Kafka cluster of %s nodes ready at %s", len(self.nodes), self.bootstrap_servers)
        return self

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop every node that runs (idempotent), even if stopping one of them fails.

        The nodes are stopped together: stopped one by one, the last ones lose the
        controller quorum and wait for it in their controlled shutdown until SIGKILL.
        """
        running = self.running_nodes()
        if not running:
            return
        with ThreadPoolExecutor(max_workers=len(running)) as pool:
            futures = [pool.submit(node.stop, timeout_s) for node in running]
        errors = [future.exception() for future in futures if future.exception() is not None]
        if errors:
            raise errors[0]

    def running_nodes(self) -> list[EmbeddedKafka]:
        return [node for node in self.nodes if node.is_running()]

    def pids(self) -> list[int]:
        """PIDs of the running nodes' JVMs."""
        return [pid for pid in (node.pid() for node in self.nodes) if pid is not None]

    def replicated(self, specs: list[TopicSpec]) -> list[TopicSpec]:
        """``specs`` with this cluster's replication factor and ``min.insync.replicas``."""
        min_isr = ("min.insync.replicas", str(self.settings.min_insync_replicas))
        return [
            replace(
                spec,
                replication_factor=self.settings.replication_factor,
                config=(*(c for c in spec.config if c[0] != min_isr[0]), min_isr),
            )
            for spec in specs
        ]

    def __enter__(self) -> "KafkaCluster":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with contextlib.suppress(Exception) if exc is not None else contextlib.nullcontext():
            self.stop()

    def __repr__(self) -> str:
        return f"KafkaCluster({self.bootstrap_servers}, {self.settings.state_dir})"
