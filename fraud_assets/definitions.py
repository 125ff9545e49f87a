"""The Dagster code location: everything under ``fraud_assets/defs``."""

from pathlib import Path

import dagster as dg


def load_definitions() -> dg.Definitions:
    """The code location's definitions (the same objects ``dagster dev`` shows).

    For runners outside ``dagster dev`` (the demo, the chaos run, ``fraud-assets stream``),
    which execute its jobs and assets in their own process.
    """
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)


@dg.definitions
def defs() -> dg.Definitions:
    return load_definitions()
