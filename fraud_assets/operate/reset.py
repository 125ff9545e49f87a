# ruff: noqa: T201 - the handler of a command line reports to the operator with print.
"""``fraud-assets reset``: start the stream from scratch without destroying anything.

The scoring and KPI checkpoints are the stream's memory of what it already processed, and
the stream tables are keyed by the micro-batch ids those checkpoints hand out: a fresh
checkpoint next to an old alerts table would reuse batch ids whose folders exist, and skip
their writes. So a reset moves the checkpoints *and* the tables they feed, together, into
``<state_dir>/attic/reset-<UTC time>/`` (a rename on the same disk: instant, and undone by
moving the folders back). Models, the audited transactions and the promotion stay, unless
``--everything`` is given. Nothing is deleted; the attic is emptied by hand.
"""

import argparse
import os
import time
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

from fraud_assets.core.paths import ProjectPaths, StreamPaths
from fraud_assets.errors import OperatorError

RECENT_WRITE_S = 120.0
"""A checkpoint written this recently probably belongs to a stream that still runs."""


class ResetRefused(RuntimeError):
    """The reset would be unsafe now; the message says why and what to do."""


@dataclass(frozen=True)
class ResetPlan:
    """What a reset moves, and where to."""

    state_dir: Path
    attic: Path
    moves: tuple[tuple[Path, Path], ...]
    """``(source, target)`` pairs; sources that do not exist are left out."""


LEGACY_STREAM_TABLES = ("scored",)
"""Tables of the stream in earlier versions: ``scored`` (every scored row; the KPI query
read it) became the ledger. A reset after an upgrade moves them with the rest."""


def stream_state(paths: ProjectPaths) -> list[Path]:
    """The checkpoints and the tables the stream writes.

    As :class:`StreamPaths` names them, and the tables of earlier versions
    (:data:`LEGACY_STREAM_TABLES`).
    """
    stream = StreamPaths.under(paths.tables_dir, paths.checkpoints_dir)
    current = [getattr(stream, item.name) for item in fields(StreamPaths)]
    return current + [paths.tables_dir / name for name in LEGACY_STREAM_TABLES]


def plan_reset(paths: ProjectPaths, *, everything: bool, now: datetime) -> ResetPlan:
    """The moves of a reset at ``now`` (nothing is touched).

    Args:
        paths: The installation whose state is reset.
        everything: Move every folder of the state dir (models, tables, checkpoints, the
            embedded broker's data), not only the stream's state.
        now: Names the attic folder (UTC, to the second).
    """
    state_dir = paths.state_dir
    attic_root = state_dir / "attic"
    attic = attic_root / f"reset-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    if everything:
        sources = (
            sorted(p for p in state_dir.iterdir() if p != attic_root and not p.is_symlink())
            if state_dir.is_dir()
            else []
        )
    else:
        sources = [p for p in stream_state(paths) if p.exists()]
    moves = tuple((source, attic / source.relative_to(state_dir)) for source in sources)
    return ResetPlan(state_dir, attic, moves)


def last_checkpoint_write(paths: ProjectPaths) -> float | None:
    """Seconds since the newest file under the checkpoints folder changed, if any."""
    newest = 0.0
    for root, _, files in os.walk(paths.checkpoints_dir):
        for name in files:
            try:
                newest = max(newest, (Path(root) / name).stat().st_mtime)
            except OSError:  # a file replaced while we looked
                continue
    return time.time() - newest if newest else None


def apply_reset(plan: ResetPlan) -> None:
    """Move every source to its target in the attic (renames, never copies or deletes).

    Raises:
        ResetRefused: The attic folder exists already (two resets in one second).
    """
    if plan.attic.exists():
        raise ResetRefused(f"{plan.attic} exists already: wait a second and retry")
    for source, target in plan.moves:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(source, target)


def reset_command(args: argparse.Namespace) -> int:
    """CLI handler: show the plan; with ``--yes``, move the state aside."""
    paths = ProjectPaths.at(args.home, args.state_dir or None)
    plan = plan_reset(paths, everything=args.everything, now=datetime.now(UTC))
    if not plan.moves:
        print(f"nothing to reset in {plan.state_dir}")
        return 0
    age = last_checkpoint_write(paths)
    if age is not None and age < RECENT_WRITE_S and not args.force:
        raise OperatorError(
            f"a checkpoint under {paths.checkpoints_dir} changed {age:.0f} s ago: the stream "
            "probably still runs. Stop it first (Dagster UI: terminate the scoring_stream run, "
            "or turn its sensor off), then retry; --force skips this check"
        )
    print(f"{'moving' if args.yes else 'would move'} into {plan.attic}:")
    for source, _ in plan.moves:
        print(f"  {source.relative_to(plan.state_dir)}")
    if not args.yes:
        print("nothing moved: add --yes to reset")
        return 1
    try:
        apply_reset(plan)
    except ResetRefused as error:
        raise OperatorError(str(error)) from error
    print(
        f"reset done; the next stream run starts from the earliest offsets it is configured "
        f"for. To undo: stop the stream, move the folders back from {plan.attic}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``reset`` to the ``fraud-assets`` parser."""
    parser = subparsers.add_parser(
        "reset",
        help="move the stream's checkpoints and tables aside (to state/attic/), never delete",
    )
    parser.add_argument(
        "--state-dir",
        default="",
        help="run state folder (default: <home>/var, as FRAUD_STATE_DIR)",
    )
    parser.add_argument("--yes", action="store_true", help="do it (without: only show the plan)")
    parser.add_argument(
        "--everything",
        action="store_true",
        help="also move models, the batch tables and the embedded broker's data",
    )
    parser.add_argument(
        "--force", action="store_true", help="reset even if a checkpoint was just written"
    )
    parser.set_defaults(handler=reset_command)
