"""How every long-running command is stopped: Ctrl-C and SIGTERM alike raise KeyboardInterrupt."""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_on_signals() -> None:
    """Ctrl-C and ``kill PID`` both raise KeyboardInterrupt, however the process was started.

    A command started in the background by a shell inherits SIGINT *ignored*, and Dagster's
    in-process execution (``materialize``, ``execute_in_process``) restores SIGINT's handler
    at its end and maps SIGTERM to the same one: without a SIGINT handler of its own,
    ``kill PID`` was then ignored too, by the command and by every process it started
    afterwards (ignored signals survive ``exec``). With Python's own handler on both, they
    raise KeyboardInterrupt before and after any Dagster execution. Call it first in a
    command's handler, before it starts anything it must stop: a handler installed later
    leaves a window in which the signal kills the command and skips its cleanup.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.default_int_handler)


def ignore_stop_signals() -> None:
    """From here on, Ctrl-C and SIGTERM are ignored: a second one must not cut a stop short.

    For the stop at the end of a command (the process exits after it); a stop that the
    process outlives uses :func:`stop_signals_ignored`.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


@contextmanager
def stop_signals_ignored() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM inside the block, then restore the handlers it found."""
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    ignore_stop_signals()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then act on them as the handlers would.

    For short work that an interrupt must not cut in the middle, such as a Spark call made
    for a report: a KeyboardInterrupt raised inside a py4j call breaks the pipe to the JVM,
    and the error PySpark raises then takes the interrupt's place (a stop that exits 1, not
    130, or that a broad ``except`` swallows). The signal is raised again, once, when the
    block ends, so whatever handler is in place (Python's, Dagster's) runs as usual. Outside
    the main thread, which cannot set handlers, the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        if received:
            signal.raise_signal(received[0])
