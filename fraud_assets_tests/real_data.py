"""Subsets of the real ULB dataset for tests (the file itself is fetched by `make setup`)."""

from pathlib import Path

import pandas as pd

from fraud_assets.setup.dataset import check_header


def write_real_subset(source: Path, target: Path, first_rows: int) -> pd.DataFrame:
    """Copy the header, the first ``first_rows`` data rows and every fraud row, byte for byte.

    Returns the subset as pandas so tests can compute their expectations independently of
    the pipeline: ``row_index`` is the data row index in the subset file (what the pipeline
    makes ``transaction_id`` of), ``source_row_index`` the one in the original file.
    """
    check_header(source)
    kept: list[str] = []
    indexes: list[int] = []
    with source.open() as handle:
        header = handle.readline()
        for index, line in enumerate(handle):
            if index < first_rows or line.rstrip().endswith('"1"'):
                kept.append(line)
                indexes.append(index)
    target.write_text(header + "".join(kept))
    frame = pd.read_csv(target)
    frame.insert(0, "row_index", range(len(kept)))
    frame.insert(1, "source_row_index", indexes)
    return frame


def distinct_transactions(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows the audit keeps: first occurrence of every exact duplicate."""
    ids = {"row_index", "source_row_index"}
    return frame.drop_duplicates(subset=[c for c in frame.columns if c not in ids])
