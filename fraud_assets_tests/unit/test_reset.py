"""``fraud-assets reset``: moves the stream's state aside together, deletes nothing."""

import argparse
import os
import time
from datetime import UTC, datetime

import pytest

from fraud_assets.core.paths import ProjectPaths, StreamPaths
from fraud_assets.errors import OperatorError
from fraud_assets.operate.reset import apply_reset, plan_reset, register, stream_state

NOW = datetime(2026, 11, 25, 10, 15, 0, tzinfo=UTC)


def _populate(paths: ProjectPaths) -> dict[str, bytes]:
    """A state dir with stream state, a model and the audited table; file -> content."""
    stream = StreamPaths.under(paths.tables_dir, paths.checkpoints_dir)
    files = {
        stream.checkpoint_dir / "offsets" / "0": b"offsets-0",
        stream.kpi_checkpoint_dir / "commits" / "0": b"kpi-commit-0",
        stream.alerts_table / "batch_id=0" / "part-0.parquet": b"alerts",
        stream.realtime_checkpoint_dir / "offsets" / "0": b"realtime-offsets-0",
        stream.ledger_table / "batch_id=0" / "part-0.parquet": b"ledger",
        # The scored table of versions before the ledger: an upgrade resets it too.
        paths.tables_dir / "scored" / "batch_id=0" / "part-0.parquet": b"scored",
        stream.batch_log_dir / "batch-000000000000.json": b"{}",
        paths.models_dir / "lr-1" / "metadata.json": b"model",
        paths.tables_dir / "audited_transactions" / "part-0.parquet": b"audited",
    }
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return {str(path.relative_to(paths.state_dir)): content for path, content in files.items()}


def _tree(folder) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file()
    }


def test_reset_moves_checkpoints_and_stream_tables_together(tmp_path):
    paths = ProjectPaths.at(tmp_path, tmp_path / "state")
    before = _populate(paths)

    plan = plan_reset(paths, everything=False, now=NOW)
    apply_reset(plan)

    assert plan.attic == paths.state_dir / "attic" / "reset-20261125T101500Z"
    moved = {str(source.relative_to(paths.state_dir)) for source, _ in plan.moves}
    assert moved == {
        "checkpoints/scoring",
        "checkpoints/kpis",
        "checkpoints/realtime_alerts",
        "tables/alerts",
        "tables/ledger",
        "tables/scored",
        "tables/stream_batches",
    }
    remaining = _tree(paths.state_dir)
    # Nothing lost: every file is either where it was or under the attic, byte for byte.
    assert {
        name.removeprefix("attic/reset-20261125T101500Z/"): content
        for name, content in remaining.items()
    } == before
    # The model and the batch table stay; the stream's state is gone from its place.
    assert "models/lr-1/metadata.json" in remaining
    assert "tables/audited_transactions/part-0.parquet" in remaining
    assert not (paths.checkpoints_dir / "scoring").exists()
    assert not (paths.tables_dir / "alerts").exists()


def test_stream_state_names_every_stream_path(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    state = stream_state(paths)
    stream = StreamPaths.under(paths.tables_dir, paths.checkpoints_dir)
    assert stream.checkpoint_dir in state and stream.alerts_table in state
    assert all(p.is_relative_to(paths.state_dir) for p in state)


def test_everything_moves_models_too_but_never_the_attic(tmp_path):
    paths = ProjectPaths.at(tmp_path, tmp_path / "state")
    before = _populate(paths)
    apply_reset(plan_reset(paths, everything=False, now=NOW))

    later = datetime(2026, 11, 25, 11, 0, 0, tzinfo=UTC)
    plan = plan_reset(paths, everything=True, now=later)
    apply_reset(plan)

    assert sorted(p.name for p in paths.state_dir.iterdir()) == ["attic"]
    first, second = "attic/reset-20261125T101500Z/", "attic/reset-20261125T110000Z/"
    restored = {
        name.removeprefix(first).removeprefix(second): content
        for name, content in _tree(paths.state_dir).items()
    }
    assert restored == before


def test_a_second_reset_in_the_same_second_is_refused(tmp_path):
    paths = ProjectPaths.at(tmp_path, tmp_path / "state")
    _populate(paths)
    apply_reset(plan_reset(paths, everything=False, now=NOW))
    _populate(paths)
    with pytest.raises(RuntimeError, match="exists already"):
        apply_reset(plan_reset(paths, everything=False, now=NOW))


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", default=".")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_without_yes_moves_nothing(tmp_path, capsys):
    paths = ProjectPaths.at(tmp_path, tmp_path / "state")
    before = _populate(paths)
    old = time.time() - 3600
    for path in paths.checkpoints_dir.rglob("*"):
        os.utime(path, (old, old))

    assert _run(["--home", str(tmp_path), "reset", "--state-dir", str(paths.state_dir)]) == 1
    assert _tree(paths.state_dir) == before
    assert "add --yes" in capsys.readouterr().out

    argv = ["--home", str(tmp_path), "reset", "--state-dir", str(paths.state_dir), "--yes"]
    assert _run(argv) == 0
    assert not paths.checkpoints_dir.joinpath("scoring").exists()


def test_cli_refuses_while_the_checkpoint_is_fresh(tmp_path):
    paths = ProjectPaths.at(tmp_path, tmp_path / "state")
    _populate(paths)  # just written: as if a stream were running
    argv = ["--home", str(tmp_path), "reset", "--state-dir", str(paths.state_dir), "--yes"]
    with pytest.raises(OperatorError, match="probably still runs"):
        _run(argv)
    assert (paths.checkpoints_dir / "scoring" / "offsets" / "0").exists()
    assert _run([*argv, "--force"]) == 0
