"""A real Apache Kafka broker (KRaft), started from the Maven Central jars.

The broker runs as one JVM (``kafka.Kafka``) in combined ``broker,controller`` mode, bound
to loopback: a single-node cluster by default, or one node of a multi-node cluster when
its settings name the whole controller quorum and a shared cluster id
(:mod:`fraud_assets.kafka.cluster`). Its whole state lives in one folder (``var/kafka`` by
default):

- ``server.properties`` and ``log4j2.properties``: rendered on every start from
  :class:`BrokerSettings`, so changing a port needs no reformat;
- ``data/``: the KRaft metadata log and the topic partitions (formatted once; the cluster
  id and node id in ``data/meta.properties`` stay for the life of the folder);
- ``logs/server.log`` (the broker's log) and ``logs/console.log`` (JVM stdout/stderr);
- ``broker.pid``: the PID of the running JVM, present only while it runs.

A PID read from ``broker.pid`` is only ever signalled after ``/proc/<pid>/cmdline`` proves
that it is ``kafka.Kafka`` running *this* folder's ``server.properties``.
"""

import base64
import contextlib
import ctypes
import ctypes.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

KAFKA_MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL_CLASS = "kafka.tools.StorageTool"

FAST_START_JVM_OPTIONS: tuple[str, ...] = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
"""JVM options that trade peak throughput for a start-up about twice as fast on 2 cores
(no C2 compiler threads competing with start-up): for short-lived brokers and tools."""

_PR_SET_PDEATHSIG = 1
_LOG_TAIL_LINES = 20


class BrokerStartError(RuntimeError):
    """The broker could not be started; the message says why and what to do."""


@dataclass(frozen=True)
class BrokerSettings:
    """How to run the embedded broker.

    Attributes:
        state_dir: Folder holding the config, the KRaft log dirs, the logs and the pid file.
        jars_dir: Folder of the broker jars (``kafka_2.13`` and its dependencies, log4j2).
        host: Address the broker and controller listen on and advertise.
        port: Client (PLAINTEXT) port.
        controller_port: KRaft controller port; ``None`` means ``port + 1`` if free, else
            any free port chosen by the OS.
        heap: JVM heap (``-Xms`` and ``-Xmx``).
        node_id: KRaft node id, fixed for the life of ``state_dir``.
        num_partitions: Default partition count of topics created without one.
        extra_properties: More ``server.properties`` entries; they override the defaults.
        jvm_options: More JVM options, after the defaults (tests pass
            :data:`FAST_START_JVM_OPTIONS`).
        java: The ``java`` executable (a name looked up on ``PATH``, or a path).
        controller_quorum_voters: The whole KRaft quorum (``"1@host:port,2@host:port,..."``)
            when this node is one of several; empty means a single voter, this node.
        cluster_id: The KRaft cluster id to format the storage with; every node of one
            cluster shares it. Empty means a new random id (a single-node cluster).
    """

    state_dir: Path
    jars_dir: Path
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int | None = None
    heap: str = "512m"
    node_id: int = 1
    num_partitions: int = 1
    extra_properties: tuple[tuple[str, str], ...] = ()
    jvm_options: tuple[str, ...] = ()
    java: str = "java"
    controller_quorum_voters: str = ""
    cluster_id: str = ""

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` of the client listener."""
        return f"{self.host}:{self.port}"

    @property
    def server_properties(self) -> Path:
        return self.state_dir / "server.properties"

    @property
    def log4j_config(self) -> Path:
        return self.state_dir / "log4j2.properties"

    @property
    def data_dir(self) -> Path:
        """The KRaft metadata and topic log dir."""
        return self.state_dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "broker.pid"


# --- pure helpers (unit-tested) -----------------------------------------------------------


def render_server_properties(settings: BrokerSettings, controller_port: int) -> str:
    """The ``server.properties`` text of a combined broker+controller node.

    The quorum is static (``controller.quorum.voters``): this node alone, or the voters
    listed in ``settings.controller_quorum_voters``; so the storage is formatted without
    ``--standalone`` and a changed port needs no reformat. A multi-node cluster raises the
    replication defaults below through ``settings.extra_properties``.
    """
    host = settings.host
    voters = settings.controller_quorum_voters or f"{settings.node_id}@{host}:{controller_port}"
    properties: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": str(settings.node_id),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{host}:{settings.port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{settings.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(settings.data_dir),
        "num.partitions": str(settings.num_partitions),
        "default.replication.factor": "1",
        # One node: every internal topic must fit on it.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "min.insync.replicas": "1",
        # Consumers in tests and demos join alone: no reason to wait 3 s for others.
        "group.initial.rebalance.delay.ms": "0",
        # Topics are created explicitly (partition counts are part of the design).
        "auto.create.topics.enable": "false",
        "log.retention.hours": "168",
        "log.segment.bytes": str(256 * 1024 * 1024),
    }
    properties.update(dict(settings.extra_properties))
    lines = ["# Rendered by fraud_assets.kafka.broker on every start: edits are overwritten."]
    lines += [f"{key}={value}" for key, value in properties.items()]
    return "\n".join(lines) + "\n"


def render_log4j_config(settings: BrokerSettings) -> str:
    """A log4j2 configuration writing the broker log to ``logs/server.log`` at INFO."""
    log_file = settings.logs_dir / "server.log"
    quiet_loggers = {
        "state": "state.change.logger",
        "request": "kafka.request.logger",
        "raft": "org.apache.kafka.raft",
        "metadata": "org.apache.kafka.metadata",
        "image": "org.apache.kafka.image",
        "storage": "org.apache.kafka.storage",
        "log": "kafka.log",
        "clients": "org.apache.kafka.clients",
        "config": "org.apache.kafka.common.config",
        "utils": "org.apache.kafka.common.utils",
    }
    lines = [
        "status = warn",
        "name = fraud_assets_kafka",
        "appender.file.type = RollingFile",
        "appender.file.name = FILE",
        f"appender.file.fileName = {log_file}",
        f"appender.file.filePattern = {log_file}.%i",
        "appender.file.layout.type = PatternLayout",
        "appender.file.layout.pattern = [%d] %p %m (%c)%n",
        "appender.file.policies.type = Policies",
        "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
        "appender.file.policies.size.size = 20MB",
        "appender.file.strategy.type = DefaultRolloverStrategy",
        "appender.file.strategy.max = 3",
        "rootLogger.level = INFO",
        "rootLogger.appenderRef.file.ref = FILE",
    ]
    for key, name in quiet_loggers.items():
        lines += [f"logger.{key}.name = {name}", f"logger.{key}.level = WARN"]
    return "\n".join(lines) + "\n"


def is_port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now.

    ``SO_REUSEADDR`` is set as the JVM sets it, so connections lingering in TIME_WAIT
    after a previous broker do not count as "in use"; a listening socket does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port that the OS considers free right now (for tests and fallbacks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def tcp_connectable(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def read_properties(path: Path) -> dict[str, str]:
    """A Java ``.properties`` file as a dict (``key=value`` lines; comments skipped)."""
    result: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "!")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        result[key.strip()] = value.strip()
    return result


def tail(path: Path, lines: int = _LOG_TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of a text file (empty if it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def process_cmdline(pid: int) -> list[str] | None:
    """The argv of a live process, or ``None`` if it does not exist (or is a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:  # zombies and kernel threads have an empty command line
        return None
    return [part.decode("utf-8", errors="replace") for part in raw.rstrip(b"\0").split(b"\0")]


def is_our_broker(pid: int, server_properties: Path) -> bool:
    """Whether ``pid`` is a live ``kafka.Kafka`` JVM running ``server_properties``."""
    argv = process_cmdline(pid)
    if argv is None:
        return False
    return KAFKA_MAIN_CLASS in argv and str(server_properties) in argv


def find_broker_pids(server_properties: Path) -> list[int]:
    """Every live JVM running ``kafka.Kafka`` with ``server_properties`` (usually 0 or 1)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and is_our_broker(int(entry.name), server_properties):
            pids.append(int(entry.name))
    return pids


def new_cluster_id() -> str:
    """A KRaft cluster id, as ``StorageTool random-uuid`` makes it (without a JVM launch).

    Kafka's ``Uuid.randomUuid()``: 16 random bytes in URL-safe base64 without padding,
    never starting with ``-`` (it would read as a command-line flag).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def parent_death_signal_setter() -> Callable[[], None]:
    """A ``preexec_fn`` making the child receive SIGTERM when its parent thread dies.

    ``prctl`` is resolved here, before the fork, so that the child only makes the call.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl
    parent_pid = os.getpid()

    def set_parent_death_signal() -> None:
        # A signal the parent ignores stays ignored across exec: the child must be stoppable.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The parent may have died between fork and prctl: then nothing would signal us.
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGTERM)

    return set_parent_death_signal


_parent_death_signal_setter = parent_death_signal_setter
"""The former private name, still imported by ``chaos/harness.py``."""


# --- the broker ---------------------------------------------------------------------------


class EmbeddedKafka:
    """One embedded broker, identified by its state folder.

    Example::

        with EmbeddedKafka(BrokerSettings(state_dir, jars_dir, port=9092)) as kafka:
            ensure_topics(kafka.bootstrap_servers, specs)

    Args:
        settings: Ports, folders and JVM options.
        tie_to_parent: When true, the JVM receives SIGTERM as soon as the Python thread that
            started it dies, even on ``kill -9`` (tests, demos). The detached CLI
            ``kafka start`` passes false so the broker outlives the command.
    """

    def __init__(self, settings: BrokerSettings, *, tie_to_parent: bool = True) -> None:
        self.settings = settings
        self.tie_to_parent = tie_to_parent
        self._process: subprocess.Popen[bytes] | None = None
        self._controller_port: int | None = None

    # -- public API ---------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for clients (what the running broker advertises, if running)."""
        advertised = self._rendered_bootstrap_servers() if self.pid() is not None else None
        return advertised or self.settings.bootstrap_servers

    def pid(self) -> int | None:
        """PID of this folder's running broker, or ``None`` (stale pid files don't count)."""
        if self._process is not None and self._process.poll() is None:
            return self._process.pid
        pid = self._read_pid_file()
        if pid is not None and is_our_broker(pid, self.settings.server_properties):
            return pid
        return None

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self, timeout_s: float = 60.0) -> "EmbeddedKafka":
        """Start the broker and return once it serves metadata.

        Raises:
            BrokerStartError: Java or the jars are missing, a port is in use, a broker of
                this folder already runs, the JVM exited, or it was not ready in time. The
                JVM this call started is stopped before raising.
        """
        self.launch()
        self.wait_until_ready(timeout_s)
        return self

    def launch(self) -> "EmbeddedKafka":
        """Start the JVM without waiting for it to serve.

        The nodes of a multi-node cluster are launched first and waited for afterwards:
        none serves metadata before a majority of the controller quorum runs.

        Raises:
            BrokerStartError: Java or the jars are missing, a port is in use, a broker of
                this folder already runs, or formatting the storage failed.
        """
        settings = self.settings
        running = self.pid()
        if running is not None:
            raise BrokerStartError(
                f"a broker is already running from {settings.state_dir} (pid {running}) at "
                f"{self.bootstrap_servers}: use it, or stop it with `fraud-assets kafka stop`"
            )
        self._remove_pid_file()
        java = self._java_executable()
        self._check_jars()
        controller_port = self._resolve_controller_port()
        for name, port in (("port", settings.port), ("controller port", controller_port)):
            if not is_port_free(settings.host, port):
                raise BrokerStartError(
                    f"{name} {port} on {settings.host} is in use: stop the other broker or "
                    "process using it, or pass another --port"
                )
        self._controller_port = controller_port
        self._write_config(controller_port)
        self._format_storage_once(java)
        self._launch(java)
        return self

    def wait_until_ready(self, timeout_s: float = 60.0) -> None:
        """Return once the launched broker serves metadata.

        Raises:
            BrokerStartError: The JVM exited or was not ready in time; the JVM that
                :meth:`launch` started is stopped before raising.
        """
        try:
            self._wait_until_ready(timeout_s)
        except BaseException as error:
            self._kill_started_process()
            if isinstance(error, BrokerStartError):
                raise
            raise BrokerStartError(f"broker start interrupted: {error!r}") from error
        log.info(
            "Kafka broker ready at %s (pid %s, log in %s)",
            self.bootstrap_servers,
            self.pid(),
            self.settings.logs_dir / "server.log",
        )

    def kill(self) -> bool:
        """Kill this folder's broker with SIGKILL, as a crash would (no clean shutdown).

        For failure tests. Only a PID proven to be this folder's broker is signalled.

        Returns:
            Whether a running broker was killed.
        """
        pid = self.pid()
        if pid is None:
            return False
        log.warning("Killing Kafka broker (pid %s) with SIGKILL", pid)
        self._signal(pid, signal.SIGKILL)
        self._wait_for_exit(pid, 10.0)
        self._reap()
        self._remove_pid_file()
        return True

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop this folder's broker: SIGTERM, then SIGKILL after ``timeout_s``.

        Idempotent. Only a PID proven to be this folder's broker is signalled.

        Returns:
            Whether a running broker was stopped.
        """
        pid = self.pid()
        if pid is None:
            self._reap()
            self._remove_pid_file()
            return False
        log.info("Stopping Kafka broker (pid %s)", pid)
        self._signal(pid, signal.SIGTERM)
        if not self._wait_for_exit(pid, timeout_s):
            log.warning("Kafka broker (pid %s) ignored SIGTERM for %.0f s: SIGKILL", pid, timeout_s)
            self._signal(pid, signal.SIGKILL)
            self._wait_for_exit(pid, 10.0)
        self._reap()
        self._remove_pid_file()
        return True

    def wait(self) -> int | None:
        """Block until the broker started by this object exits; its exit code."""
        if self._process is None:
            return None
        return self._process.wait()

    def status(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """A JSON-ready summary: running, pid, bootstrap_servers, state_dir, topics."""
        pid = self.pid()
        summary: dict[str, Any] = {
            "running": pid is not None,
            "pid": pid,
            "bootstrap_servers": self.bootstrap_servers,
            "state_dir": str(self.settings.state_dir),
        }
        if pid is not None:
            # Imported here: kafka-python is only needed once a broker runs.
            from fraud_assets.kafka.admin import list_topics

            try:
                summary["topics"] = list_topics(self.bootstrap_servers, timeout_s=timeout_s)
            except Exception as error:  # status must report, not crash
                summary["topics_error"] = str(error)
        return summary

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> list[str]:
        """The last lines of the broker log, after the last lines of the JVM console.

        The console holds what happens before logging starts (bad JVM options, a missing
        class); the broker log holds everything after.
        """
        console = tail(self.settings.logs_dir / "console.log", lines // 2)
        server_log = tail(self.settings.logs_dir / "server.log", lines)
        result = []
        if console:
            result += ["--- logs/console.log ---", *console]
        if server_log:
            result += ["--- logs/server.log ---", *server_log]
        return result

    def __enter__(self) -> "EmbeddedKafka":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedKafka({self.settings.bootstrap_servers}, {self.settings.state_dir})"

    # -- start-up steps -----------------------------------------------------------------

    def _java_executable(self) -> str:
        java = shutil.which(self.settings.java)
        if java is None:
            raise BrokerStartError(
                f"Java was not found ({self.settings.java!r} is not on PATH): install a JDK "
                "17+ (e.g. `apt-get install openjdk-17-jre-headless`) and retry"
            )
        return java

    def _check_jars(self) -> None:
        jars_dir = self.settings.jars_dir
        names = [jar.name for jar in jars_dir.glob("*.jar")] if jars_dir.is_dir() else []
        missing = [
            prefix
            for prefix in ("kafka_2.13-", "kafka-clients-", "log4j-core-")
            if not any(name.startswith(prefix) for name in names)
        ]
        if missing:
            raise BrokerStartError(
                f"the Kafka broker jars are missing from {jars_dir} (no "
                f"{', '.join(p + '*.jar' for p in missing)}): run `make setup` "
                "(or `fraud-assets setup`) to resolve them from Maven Central"
            )

    def _classpath(self) -> str:
        return str(self.settings.jars_dir / "*")

    def _jvm_logging_options(self) -> list[str]:
        return [
            f"-Dlog4j2.configurationFile={self.settings.log4j_config}",
            f"-Dkafka.logs.dir={self.settings.logs_dir}",
        ]

    def _resolve_controller_port(self) -> int:
        settings = self.settings
        if settings.controller_port is not None:
            return settings.controller_port
        if settings.port + 1 <= 65535 and is_port_free(settings.host, settings.port + 1):
            return settings.port + 1
        port = free_port(settings.host)
        log.info("Port %s is taken: the controller listens on %s", settings.port + 1, port)
        return port

    def _write_config(self, controller_port: int) -> None:
        settings = self.settings
        settings.logs_dir.mkdir(parents=True, exist_ok=True)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.server_properties.write_text(
            render_server_properties(settings, controller_port), encoding="utf-8"
        )
        settings.log4j_config.write_text(render_log4j_config(settings), encoding="utf-8")

    def _format_storage_once(self, java: str) -> None:
        """Format the KRaft log dir if it has no ``meta.properties`` yet."""
        settings = self.settings
        meta = settings.data_dir / "meta.properties"
        if meta.exists():
            stored_node = read_properties(meta).get("node.id")
            if stored_node is not None and stored_node != str(settings.node_id):
                raise BrokerStartError(
                    f"{settings.data_dir} belongs to node {stored_node}, not node "
                    f"{settings.node_id}: use node_id={stored_node} or another state folder"
                )
            return
        base = [
            java,
            "-Xmx256m",
            *FAST_START_JVM_OPTIONS,
            *self._jvm_logging_options(),
            "-cp",
            self._classpath(),
        ]
        cluster_id = settings.cluster_id or new_cluster_id()
        self._run_tool(
            [
                *base,
                STORAGE_TOOL_CLASS,
                "format",
                "--ignore-formatted",
                "-t",
                cluster_id,
                "-c",
                str(settings.server_properties),
            ]
        )
        log.debug("Formatted Kafka storage in %s (cluster id %s)", settings.data_dir, cluster_id)

    def _run_tool(self, command: list[str]) -> str:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=120, cwd=self.settings.state_dir
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().splitlines()[-_LOG_TAIL_LINES:]
            raise BrokerStartError(
                f"`{' '.join(command[-4:])}` failed with exit code {result.returncode}:\n"
                + "\n".join(output)
            )
        return result.stdout

    def _launch(self, java: str) -> None:
        settings = self.settings
        command = [
            java,
            f"-Xms{settings.heap}",
            f"-Xmx{settings.heap}",
            "-Djava.awt.headless=true",
            *settings.jvm_options,
            *self._jvm_logging_options(),
            "-cp",
            self._classpath(),
            KAFKA_MAIN_CLASS,
            str(settings.server_properties),
        ]
        console = (settings.logs_dir / "console.log").open("ab")
        try:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=settings.state_dir,
                # Own session: a Ctrl-C in the terminal reaches the CLI, which stops the
                # broker cleanly, and a detached broker survives the terminal closing.
                start_new_session=True,
                preexec_fn=parent_death_signal_setter() if self.tie_to_parent else None,
            )
        finally:
            console.close()
        settings.pid_file.write_text(f"{self._process.pid}\n", encoding="utf-8")
        log.debug(
            "Started Kafka broker JVM (pid %s), log in %s",
            self._process.pid,
            settings.logs_dir / "server.log",
        )

    def _wait_until_ready(self, timeout_s: float) -> None:
        from fraud_assets.kafka.admin import broker_serves_metadata

        settings = self.settings
        deadline = time.monotonic() + timeout_s
        last_problem = "the port never accepted connections"
        while True:
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                raise BrokerStartError(self._failure_message(f"the broker exited with code {code}"))
            if tcp_connectable(settings.host, settings.port, timeout_s=1.0):
                remaining = max(1.0, min(5.0, deadline - time.monotonic()))
                problem = broker_serves_metadata(settings.bootstrap_servers, remaining)
                if problem is None:
                    return
                last_problem = problem
            if time.monotonic() >= deadline:
                raise BrokerStartError(
                    self._failure_message(f"not ready after {timeout_s:.0f} s ({last_problem})")
                )
            time.sleep(0.25)

    def _failure_message(self, cause: str) -> str:
        settings = self.settings
        lines = self.log_tail()
        text = "\n".join(lines)
        advice = f"see {settings.logs_dir}/server.log and console.log"
        if "Address already in use" in text:
            cause += f"; a port ({settings.port} or {self._controller_port}) is in use"
            advice = "stop the other broker or pass another --port"
        elif "OutOfMemoryError" in text or "Could not reserve enough space" in text:
            advice = "give the broker less heap (heap=...) or free memory"
        elif "INCONSISTENT_CLUSTER_ID" in text or "meta.properties" in text:
            advice = f"the storage in {settings.data_dir} does not match this config: " + advice
        return (
            f"Kafka broker at {settings.bootstrap_servers} failed to start: {cause}. "
            f"What to do: {advice}.\nLast lines of the broker log:\n{text}"
        )

    # -- stopping -----------------------------------------------------------------------

    def _kill_started_process(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait(timeout=10)
        self._remove_pid_file()

    def _signal(self, pid: int, signum: int) -> None:
        # Re-check right before signalling: the PID must still be this folder's broker.
        if self._process is not None and self._process.pid == pid:
            if self._process.poll() is None:
                self._process.send_signal(signum)
            return
        if is_our_broker(pid, self.settings.server_properties):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _wait_for_exit(self, pid: int, timeout_s: float) -> bool:
        if self._process is not None and self._process.pid == pid:
            try:
                self._process.wait(timeout=timeout_s)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not is_our_broker(pid, self.settings.server_properties):
                return True
            time.sleep(0.1)
        return not is_our_broker(pid, self.settings.server_properties)

    def _reap(self) -> None:
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=1)
            if self._process.poll() is not None:
                self._process = None

    # -- pid file -------------------------------------------------------------------------

    def _read_pid_file(self) -> int | None:
        try:
            return int(self.settings.pid_file.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return None

    def _remove_pid_file(self) -> None:
        pid = self._read_pid_file()
        if pid is not None and is_our_broker(pid, self.settings.server_properties):
            return  # still ours and alive: keep the record
        with contextlib.suppress(FileNotFoundError):
            self.settings.pid_file.unlink()

    def _rendered_bootstrap_servers(self) -> str | None:
        try:
            advertised = read_properties(self.settings.server_properties).get(
                "advertised.listeners", ""
            )
        except OSError:
            return None
        for listener in advertised.split(","):
            name, _, address = listener.partition("://")
            if name.strip() == "PLAINTEXT" and address:
                return address.strip()
        return None
