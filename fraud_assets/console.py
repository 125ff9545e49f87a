"""What the commands show in a terminal: our lines, and the libraries' noise left out.

Quiet (the default), the terminal shows one line per stage (fraud_assets' own INFO logs),
progress bars on long work, and every warning and error, ours and the libraries'. A few
libraries talk too much for an operator; each is quieted here, per logger, and
``--verbose`` restores all of it (with DEBUG logs and Dagster's event lines):

- kafka-python logs every connection at INFO, and warns that its event loop "is blocking"
  whenever our thread holds the GIL for a while (harmless for our short-lived clients);
- py4j logs every callback-server command at INFO (one per micro-batch);
- alembic logs its migration plugins at INFO each time Dagster opens an instance;
- matplotlib announces its font cache at INFO;
- Dagster's console logger prints every run event at DEBUG (runners set its level with
  :func:`dagster_console_level`);
- Dagster 1.13 warns ``BetaWarning: Parameter `owners` of initializer
  SensorDefinition.__init__`` for sensors that set no owners at all (its own
  ``with_attributes`` passes an empty list); that one warning, by its text, is ignored.

Spark's JVM logs through ``core/log4j2.properties`` (warnings and errors, as Spark's own
default after ``setLogLevel("WARN")``, without its start-up banner).
"""

import logging
import warnings

QUIET_LOGGERS: dict[str, int] = {
    "kafka": logging.WARNING,
    "kafka.net.selector": logging.ERROR,
    "py4j": logging.WARNING,
    "alembic": logging.WARNING,
    "matplotlib": logging.WARNING,
}
"""Library loggers and the lowest level they show unless ``--verbose``."""

DAGSTER_OWNERS_BETA_WARNING = r"Parameter `owners` of initializer `SensorDefinition.__init__`"
"""The start of the one Dagster warning about our definitions that is Dagster's own doing."""

QUIET_FORMAT = "%(asctime)s %(message)s"
VERBOSE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _ConsoleFormatter(logging.Formatter):
    """Our INFO lines as ``time message``; warnings and errors keep their level and logger."""

    def __init__(self) -> None:
        super().__init__(QUIET_FORMAT, datefmt="%H:%M:%S")
        self._detailed = logging.Formatter(VERBOSE_FORMAT, datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            return self._detailed.format(record)
        return super().format(record)


def configure_logging(verbose: bool) -> None:
    """Set up the process's console logging for a command (see the module docstring)."""
    handler = logging.StreamHandler()
    if verbose:
        handler.setFormatter(logging.Formatter(VERBOSE_FORMAT))
    else:
        handler.setFormatter(_ConsoleFormatter())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else level)
    if not verbose:
        warnings.filterwarnings("ignore", message=DAGSTER_OWNERS_BETA_WARNING)


def dagster_console_level(verbose: bool) -> str:
    """The level of Dagster's console logger in a run this process executes.

    Quiet: warnings and errors (a failed step with its stack trace) only; the runner prints
    one line per stage itself, and every event is still stored in the instance.
    """
    return "DEBUG" if verbose else "WARNING"


def dagster_run_config(verbose: bool) -> dict[str, object]:
    """The ``loggers`` part of a run config with :func:`dagster_console_level`."""
    return {"loggers": {"console": {"config": {"log_level": dagster_console_level(verbose)}}}}
