"""How every long-running command is stopped: Ctrl-C and SIGTERM alike raise KeyboardInterrupt."""

import signal


def stop_on_signals() -> None:
    """Ctrl-C and ``kill PID`` both raise KeyboardInterrupt, however the process was started.

    A command started in the background by a shell inherits SIGINT *ignored*, and Dagster's
    in-process execution (``materialize``, ``execute_in_process``) restores SIGINT's handler
    at its end and maps SIGTERM to the same one: without a SIGINT handler of its own,
    ``kill PID`` was then ignored too, by the command and by every process it started
    afterwards (ignored signals survive ``exec``). With Python's own handler on both, they
    raise KeyboardInterrupt before and after any Dagster execution. Call it first in a
    command's handler.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
