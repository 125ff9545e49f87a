"""docs/configuration.md lists every setting the code reads, with the code's defaults."""

import re
from pathlib import Path

import pytest

from fraud_assets_tests.config_names import env_bindings

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "configuration.md"
PACKAGE = REPO / "fraud_assets"
FRAUD_NAME = re.compile(r"\bFRAUD_[A-Z0-9]+(?:_[A-Z0-9]+)*\b")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


@pytest.fixture(scope="module")
def rows() -> list[list[str]]:
    """Every table row of the page, as cells (header and separator rows included)."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    return [_cells(line) for line in lines if line.startswith("|")]


def rendered(value: object) -> str:
    """How the page writes a default."""
    return "(empty)" if value == "" else f"`{value}`"


def test_every_environment_variable_is_listed_with_its_field_and_default(rows):
    table = {(row[0], row[1]): row[2] for row in rows if len(row) >= 4}
    for binding in env_bindings():
        key = (f"`{binding.env}`", f"`{binding.resource}.{binding.field}`")
        assert key in table, f"docs/configuration.md has no row for {key}"
        assert table[key] == rendered(binding.default), (
            f"{binding.env}: the page says {table[key]}, the code's default is "
            f"{rendered(binding.default)}"
        )


def test_every_fraud_name_in_the_code_is_documented():
    """Names read or mentioned anywhere in the package (error messages name them too)."""
    documented = set(FRAUD_NAME.findall(DOC.read_text(encoding="utf-8")))
    in_code = {
        name
        for path in PACKAGE.rglob("*.py")
        for name in FRAUD_NAME.findall(path.read_text(encoding="utf-8"))
    }
    assert in_code, "no FRAUD_ name found in the package: the pattern is wrong"
    assert in_code - documented == set()


def test_the_page_names_no_variable_the_code_does_not_read():
    documented = set(FRAUD_NAME.findall(DOC.read_text(encoding="utf-8")))
    read = {binding.env for binding in env_bindings()}
    assert documented - read == set(), "the page documents variables nothing reads"


def test_every_resource_field_is_documented(rows):
    from fraud_assets.defs.resources import build_resources

    documented = {cell.strip("`") for row in rows for cell in row[:2]}
    for key, resource in build_resources().items():
        for field in type(resource).model_fields:
            assert f"{key}.{field}" in documented, f"{key}.{field} is not documented"


def test_every_scoring_stream_config_key_is_documented_with_its_default(rows):
    from fraud_assets.defs.stream import ScoringStreamConfig

    table = {row[0].strip("`"): row[1] for row in rows if len(row) >= 3}
    for name, field in ScoringStreamConfig.model_fields.items():
        key = f"ops.run_scoring_stream.config.{name}"
        assert key in table, f"{key} is not documented"
        assert table[key] == rendered(field.default), key


def test_the_model_evidence_settings_are_documented_with_their_defaults(rows):
    from fraud_assets.defs.selection import PromotionGateConfig, SelectionConfig
    from fraud_assets.defs.train import TrainingRunConfig

    table = {row[0].strip("`"): row[1] for row in rows if len(row) >= 3}
    settings = [
        ("fraud_model", TrainingRunConfig, "protocols"),
        ("fraud_model", TrainingRunConfig, "rolling_folds"),
        ("model_selection", SelectionConfig, "ap_tolerance"),
        ("model_selection_model_quality_gate", PromotionGateConfig, "min_average_precision"),
    ]
    for op, config, name in settings:
        key = f"ops.{op}.config.{name}"
        assert key in table, f"{key} is not documented"
        assert table[key] == rendered(config.model_fields[name].default), key
