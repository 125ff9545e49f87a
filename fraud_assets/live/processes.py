"""The processes ``fraud-assets live`` starts, and how it finds and stops every one of them.

Each child runs in a session of its own, so that Ctrl-C in the terminal reaches only the
runner, which then stops them in order (a run must end before its code server, Spark before
the broker). Each also gets SIGTERM if the runner dies (``PR_SET_PDEATHSIG``). Every process
of a live session, down to the run workers' Spark JVMs, inherits :data:`SESSION_ENV`: after
the stop, ``/proc`` is searched for it and anything left is stopped by its PID.
"""

import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fraud_assets.kafka.broker import parent_death_signal_setter

log = logging.getLogger(__name__)

SESSION_ENV = "FA_LIVE_SESSION"
"""Set to a new id for each live session, in the runner and so in everything it starts."""


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split(" ", 1)[0]


def is_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: its parent only has to reap it)."""
    state = _state(pid)
    return state is not None and state != "Z"


def processes_with_env(name: str, value: str, exclude: Sequence[int] = ()) -> dict[int, str]:
    """Live processes whose environment has ``name=value``: {pid: command line}."""
    needle = f"{name}={value}".encode()
    skip = {os.getpid(), *exclude}
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if needle in environ.split(b"\0") and is_alive(int(entry.name)):
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")[:200]
    return found


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (a run worker names its run)."""
    needle = text.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and is_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def stop_pids(pids: Sequence[int], grace_s: float) -> list[int]:
    """SIGTERM each PID, SIGKILL what is still alive after ``grace_s``; the PIDs killed."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(is_alive(pid) for pid in pids):
        time.sleep(0.2)
    killed = [pid for pid in pids if is_alive(pid)]
    for pid in killed:
        _signal(pid, signal.SIGKILL)
    return killed


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


@dataclass
class Child:
    """One process of the live system, in its own session, logging to ``log_path``."""

    name: str
    process: subprocess.Popen
    log_path: Path

    @classmethod
    def start(
        cls, name: str, command: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path
    ) -> "Child":
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                list(command),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=parent_death_signal_setter(),
            )
        log.debug("%s started (pid %d, log %s)", name, process.pid, log_path)
        return cls(name, process, log_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    def exited(self) -> int | None:
        """Its exit code once it has exited, None while it runs."""
        return self.process.poll()

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM to its process group, SIGKILL to the group after ``grace_s``."""
        if self.process.poll() is None:
            _killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s (pid %d) ignored SIGTERM for %.0f s: SIGKILL", self.name, self.pid, grace_s
                )
        # Whatever it left in its group (helpers it forked) goes with it.
        _killpg(self.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _killpg(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass
