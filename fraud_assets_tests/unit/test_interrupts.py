"""Stop signals: raised as KeyboardInterrupt, held during short work, ignored during a stop."""

import os
import signal
import time

import pytest

from fraud_assets.interrupts import interrupts_deferred, stop_on_signals, stop_signals_ignored


@pytest.fixture
def stop_handlers():
    """Python's KeyboardInterrupt on SIGINT and SIGTERM for the test, pytest's after it."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stop_on_signals()
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def _wait_for_signal_delivery() -> None:
    # Python runs a handler between bytecodes; a few loop turns are enough.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_sigterm_inside_the_block_is_raised_when_it_ends(stop_handlers):
    finished = False
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            _wait_for_signal_delivery()
            finished = True  # the work was not cut short
    assert finished
    assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler


def test_a_block_without_a_signal_ends_quietly_and_restores_the_handlers(stop_handlers):
    with interrupts_deferred():
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler


def test_outside_the_block_a_sigterm_interrupts_at_once(stop_handlers):
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
        _wait_for_signal_delivery()
        pytest.fail("the signal was not delivered")


def test_signals_are_ignored_during_a_stop_and_the_handlers_come_back(stop_handlers):
    with stop_signals_ignored():
        os.kill(os.getpid(), signal.SIGTERM)
        _wait_for_signal_delivery()
    assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler
