"""Run the real ``dagster dev`` (webserver + daemon + code server) for a test, and stop it.

``dagster dev`` is started in a new session (its own process group): started like a
background job from a script it ignores SIGTERM, so the only reliable stop is a signal to
the whole group. Everything it spawns (code server, daemon, run workers, their Spark JVMs)
inherits ``DAGSTER_HOME``; after the stop, ``/proc`` is scanned for any process that still
references the test's Dagster home, so a test cannot leak a run worker or a JVM unnoticed.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fraud_assets.kafka.broker import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
CODE_LOCATION = "fraud_assets"
"""The code location name ``workspace.yaml`` yields for ``fraud_assets.definitions``."""

STARTUP_TIMEOUT_S = 120.0
STOP_GRACE_S = 30.0

# Inherited variables that would silently reconfigure the code location or the instance.
_INHERITED_PREFIXES_DROPPED = ("FRAUD_", "DAGSTER_")

T = TypeVar("T")

# dagster dev maps SIGTERM to its SIGINT handler; when SIGINT is ignored, as in anything
# started in the background by a non-interactive shell (CI steps, `cmd &`), SIGTERM is then
# ignored too (checked: SigIgn in /proc/PID/status). An ignored signal survives exec, so
# dagster dev is exec'ed from a tiny launcher that restores SIGINT's default first.
_EXEC_WITH_DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


class DagsterDevError(AssertionError):
    """``dagster dev`` did not start, did not answer, or left processes behind."""


@dataclass(frozen=True)
class DagsterDev:
    """A running ``dagster dev``: where it answers, its process group and its log."""

    url: str
    port: int
    pid: int
    """The ``dagster dev`` process; also its process group id (it leads a new session)."""
    log_path: Path
    dagster_home: Path

    def log_tail(self, lines: int = 80) -> str:
        """The last ``lines`` lines of the combined stdout/stderr log."""
        return log_tail(self.log_path, lines)

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """POST a GraphQL query to the webserver (as the UI does) and return ``data``."""
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise DagsterDevError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]


def log_tail(path: Path, lines: int = 80) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    if not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def wait_until(
    probe: Callable[[], T | None],
    timeout_s: float,
    what: str,
    *,
    poll_s: float = 1.0,
    details: Callable[[], str] = lambda: "",
) -> T:
    """Call ``probe`` until it returns something other than None/False; return that value.

    Raises:
        DagsterDevError: After ``timeout_s`` seconds, with ``what`` and ``details()``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            raise DagsterDevError(
                f"timed out after {timeout_s:.0f} s waiting for {what}\n{details()}"
            )
        time.sleep(poll_s)


def dagster_dev_env(dagster_home: Path, env: Mapping[str, str]) -> dict[str, str]:
    """The environment of ``dagster dev``: ours minus FRAUD_*/DAGSTER_*, plus ``env``."""
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_INHERITED_PREFIXES_DROPPED)
    }
    base.update(
        {
            "DAGSTER_HOME": str(dagster_home),
            "SPARK_LOCAL_IP": "127.0.0.1",
            # Spark's Python workers must use the project's interpreter (pandas UDFs).
            "PYSPARK_PYTHON": sys.executable,
            "PYTHONUNBUFFERED": "1",
        }
    )
    base.update(env)
    return base


def processes_referencing(text: str, exclude: set[int] | None = None) -> dict[int, str]:
    """Live processes whose command line or environment contains ``text``: {pid: cmdline}."""
    exclude = {os.getpid(), *(exclude or set())}
    needle = text.encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            state = _proc_state(entry)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if state == "Z":  # a zombie holds no resources; its parent reaps it
            continue
        if needle in cmdline or needle in environ:
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")[:300]
    return found


def _proc_state(entry: Path) -> str:
    stat = (entry / "stat").read_text()
    return stat[stat.rfind(")") + 2 :].split(" ", 1)[0]


def _server_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _kill_leftovers(leftovers: dict[int, str], grace_s: float = 10.0) -> None:
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in leftovers):
        time.sleep(0.2)
    for pid in leftovers:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _alive(pid: int) -> bool:
    try:
        return _proc_state(Path(f"/proc/{pid}")) != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@contextmanager
def running_dagster_dev(
    dagster_home: Path,
    env: Mapping[str, str],
    port: int | None = None,
    *,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
    stop_grace_s: float = STOP_GRACE_S,
    log_path: Path | None = None,
) -> Iterator[DagsterDev]:
    """Start ``dagster dev -w workspace.yaml`` on 127.0.0.1 for the repository; stop it on exit.

    Args:
        dagster_home: An absolute, existing-or-creatable folder: the instance (run storage,
            logs); the repository's ``dagster.yaml`` is copied into it.
        env: Extra environment for ``dagster dev`` and all it spawns (FRAUD_* settings).
            Inherited FRAUD_*/DAGSTER_* variables are dropped first.
        port: The webserver port; None picks a free one.
        startup_timeout_s: How long ``/server_info`` may take to answer.
        stop_grace_s: How long the process group has to exit after SIGTERM before SIGKILL.
        log_path: The combined stdout/stderr log; default ``<dagster_home>/dagster-dev.log``.

    Yields:
        The running instance's URL, PID and log.

    Raises:
        DagsterDevError: It did not answer in time (with the log tail), or processes
            referencing ``dagster_home`` were still alive after the stop (they are killed
            first, then reported).
    """
    dagster_home = Path(dagster_home).resolve()
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = log_path or dagster_home / "dagster-dev.log"
    command = [
        sys.executable,
        "-c",
        _EXEC_WITH_DEFAULT_SIGINT,
        "-m",
        "dagster",
        "dev",
        "-w",
        "workspace.yaml",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=dagster_dev_env(dagster_home, env),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    handle = DagsterDev(
        url=url, port=port, pid=process.pid, log_path=log_path, dagster_home=dagster_home
    )
    failure: BaseException | None = None
    try:

        def answers() -> bool:
            if process.poll() is not None:
                raise DagsterDevError(
                    f"dagster dev exited with code {process.returncode} before answering on "
                    f"{url}; log tail:\n{handle.log_tail()}"
                )
            return _server_answers(url)

        wait_until(
            answers,
            startup_timeout_s,
            f"dagster dev to answer on {url}/server_info",
            details=handle.log_tail,
        )
        yield handle
    except BaseException as error:
        failure = error
        raise
    finally:
        leftovers = _stop(process, handle, stop_grace_s)
        if leftovers:
            report = (
                f"processes of {dagster_home} did not exit within {stop_grace_s:.0f} s of "
                "SIGTERM to dagster dev's process group (killed with SIGKILL):\n"
                + "\n".join(f"  {pid}: {cmd}" for pid, cmd in leftovers.items())
            )
            if failure is None:
                raise DagsterDevError(f"{report}\nlog tail:\n{handle.log_tail(40)}")
            failure.add_note(report)  # the test already fails: say this too, don't mask it


def _stop(process: subprocess.Popen, handle: DagsterDev, grace_s: float) -> dict[int, str]:
    """Stop the group (SIGTERM, grace, SIGKILL), then kill what is left of ``dagster_home``.

    Returns:
        The processes that did not exit on SIGTERM within the grace period, {pid: cmdline}.
    """
    home = str(handle.dagster_home)
    signalled = set(processes_referencing(home))
    _signal_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    try:
        process.wait(timeout=min(grace_s, 5.0))
    except subprocess.TimeoutExpired:
        pass
    # The leader may exit while its children are still shutting down: they get the same
    # grace period, counted from the SIGTERM. dagster dev's code-server manager can also
    # restart a code server that exited during the shutdown (seen once: "Code server process
    # has exited with code 0. Restarting the code server process"); that new process was
    # born after the SIGTERM, so it gets its own, once.
    while time.monotonic() < deadline and (alive := processes_referencing(home)):
        for pid in set(alive) - signalled:
            signalled.add(pid)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    not_stopped = processes_referencing(home)
    _signal_group(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.wait(timeout=10)
    # Anything that left the group (a new session) and references this home.
    outside_group = processes_referencing(home)
    if outside_group:
        _kill_leftovers(outside_group)
    not_stopped.update(outside_group)
    with handle.log_path.open("a") as log:
        log.write(
            "\n[test harness] dagster dev stopped; processes that needed SIGKILL: "
            f"{not_stopped or 'none'}\n"
        )
    return not_stopped


_WORKSPACE_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message stack }
        }
      }
    }
  }
}
"""


def wait_for_code_location(dev: DagsterDev, timeout_s: float = 120.0) -> str:
    """Wait until the webserver has loaded the repository's code location; return its name.

    The name comes from ``workspace.yaml`` (it is the module name unless the file sets
    ``location_name``), so callers build UI URLs from it instead of assuming one.

    Raises:
        DagsterDevError: The location failed to load (with Dagster's error), or did not
            load within ``timeout_s``.
    """

    def loaded() -> str | None:
        try:
            data = dev.graphql(_WORKSPACE_QUERY)
        except (urllib.error.URLError, OSError):
            return None
        entries = data["workspaceOrError"].get("locationEntries") or []
        for entry in entries:
            located = entry.get("locationOrLoadError") or {}
            if located.get("__typename") == "PythonError":
                raise DagsterDevError(
                    f"code location {entry['name']} failed to load: {located.get('message')}\n"
                    + "".join(located.get("stack") or [])
                )
            if entry["loadStatus"] == "LOADED" and located.get("__typename"):
                return entry["name"]
        return None

    return wait_until(
        loaded, timeout_s, "the code location to load in dagster dev", details=dev.log_tail
    )
