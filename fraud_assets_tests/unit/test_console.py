"""Quiet by default, everything with --verbose: the console set-up of every command."""

import subprocess
import sys

PROBE = """
import logging, warnings
from fraud_assets.console import configure_logging
configure_logging({verbose})
logging.getLogger("kafka.net.selector").warning("Task ran for 0.2s: is blocking the event loop")
logging.getLogger("py4j.clientserver").info("Received command c on object id p0")
logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
logging.getLogger("fraud_assets.end_to_end").info("audit: materializing raw_transactions")
logging.getLogger("fraud_assets.core.stream").warning("model m: alerts carry no explanation")
logging.getLogger("kafka.conn").error("connection refused")
warnings.warn("Parameter `owners` of initializer `SensorDefinition.__init__` is in beta")
warnings.warn("some other library warning")
"""


def console(verbose: bool) -> str:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(verbose=verbose)],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout + result.stderr


def test_quiet_keeps_our_lines_and_every_warning_but_the_known_noise():
    text = console(verbose=False)
    assert "audit: materializing raw_transactions" in text
    assert "WARNING fraud_assets.core.stream: model m: alerts carry no explanation" in text
    assert "ERROR kafka.conn: connection refused" in text  # a library's error still shows
    assert "some other library warning" in text
    assert "is blocking the event loop" not in text
    assert "Received command" not in text
    assert "SQLiteImpl" not in text
    assert "SensorDefinition" not in text


def test_verbose_brings_everything_back():
    text = console(verbose=True)
    for line in (
        "is blocking the event loop",
        "Received command c on object id p0",
        "Context impl SQLiteImpl.",
        "SensorDefinition.__init__",
        "audit: materializing raw_transactions",
    ):
        assert line in text
