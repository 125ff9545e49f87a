"""Reading a query's checkpoint and progress: where real-time delivery starts and stops."""

import json

import pytest

from fraud_assets.core.queries import committed_offsets, reached
from fraud_assets.core.stream_run import DeliveryModeError, RunSettings


def _batch(checkpoint, batch_id, offsets, committed=True):
    (checkpoint / "offsets").mkdir(parents=True, exist_ok=True)
    (checkpoint / "offsets" / str(batch_id)).write_text(
        'v1\n{"batchWatermarkMs":0,"batchTimestampMs":1}\n' + json.dumps(offsets) + "\n"
    )
    if committed:
        (checkpoint / "commits").mkdir(exist_ok=True)
        (checkpoint / "commits" / str(batch_id)).write_text('v1\n{"nextBatchWatermarkMs":0}\n')


def test_committed_offsets_are_the_end_of_the_newest_committed_batch(tmp_path):
    _batch(tmp_path, 0, {"tx": {"0": 5, "1": 7}})
    _batch(tmp_path, 1, {"tx": {"0": 9, "1": 12}})
    _batch(tmp_path, 2, {"tx": {"0": 20, "1": 30}}, committed=False)  # planned, not done
    assert json.loads(committed_offsets(tmp_path)) == {"tx": {"0": 9, "1": 12}}


def test_no_commit_means_no_offsets(tmp_path):
    assert committed_offsets(tmp_path) is None
    _batch(tmp_path, 0, {"tx": {"0": 5}}, committed=False)
    assert committed_offsets(tmp_path) is None


def test_a_malformed_offsets_log_fails_here(tmp_path):
    _batch(tmp_path, 0, {"tx": {"0": 5}})
    (tmp_path / "offsets" / "0").write_text("v1\n{}\nnot json\n")
    with pytest.raises(ValueError):
        committed_offsets(tmp_path)


def test_reached_needs_every_partition_at_or_past_its_target():
    progress = {"sources": [{"endOffset": json.dumps({"tx": {"0": 10, "1": 4}})}]}
    assert reached(progress, "tx", {0: 10, 1: 4})
    assert reached(progress, "tx", {0: 3})
    assert not reached(progress, "tx", {0: 10, 1: 5})
    assert not reached(progress, "tx", {2: 0})  # a partition it has not read
    assert not reached(None, "tx", {0: 0})
    assert not reached({"sources": []}, "tx", {0: 0})


def test_an_unknown_delivery_mode_is_refused_with_the_variable_to_set():
    with pytest.raises(DeliveryModeError, match="FRAUD_ALERT_DELIVERY.*microbatch, realtime"):
        RunSettings(delivery="batchy")
    assert RunSettings(delivery="realtime").is_realtime
    assert not RunSettings().is_realtime
