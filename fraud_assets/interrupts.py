"""How every long-running command is stopped: Ctrl-C and SIGTERM alike raise KeyboardInterrupt."""

import signal
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
