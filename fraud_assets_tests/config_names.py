"""The configuration the code reads, found in the code itself (for tests of compose and docs).

``fraud_assets/defs/resources.py`` is the one place that reads the environment: each
resource field bound in ``build_resources()`` with ``_env("FRAUD_...", default)`` (or
``_env_int``, ...) is a setting. The bindings are read from its syntax tree, the defaults
from the resources ``build_resources()`` returns when none of the variables is set, so a
new variable or a changed default shows up here without editing a list.
"""

import ast
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

RESOURCES_FILE = Path(__file__).resolve().parents[1] / "fraud_assets" / "defs" / "resources.py"


@dataclass(frozen=True)
class EnvBinding:
    """One environment variable bound to one resource field."""

    env: str
    resource: str
    """The resource key in ``build_resources()`` (``project``, ``kafka``, ``spark``)."""
    field: str
    default: object


def _binding_calls(tree: ast.AST) -> list[tuple[str, str, str]]:
    """``(resource key, field, env name)`` of every ``field=_env*("NAME", ...)`` keyword."""
    function = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == "build_resources"
    )
    aliases: dict[str, str] = {}  # e.g. home = _env("FRAUD_HOME", ".")
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            name = _env_name(node.value)
            if name and isinstance(node.targets[0], ast.Name):
                aliases[node.targets[0].id] = name
    found = []
    returned = next(node for node in ast.walk(function) if isinstance(node, ast.Dict))
    for key, value in zip(returned.keys, returned.values, strict=True):
        assert isinstance(key, ast.Constant) and isinstance(value, ast.Call)
        for keyword in value.keywords:
            name = _env_name(keyword.value)
            if name is None and isinstance(keyword.value, ast.Name):
                name = aliases.get(keyword.value.id)
            if name is not None and keyword.arg is not None:
                found.append((key.value, keyword.arg, name))
    return found


def _env_name(node: ast.AST) -> str | None:
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id.startswith("_env")
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return node.args[0].value
    return None


def env_bindings() -> list[EnvBinding]:
    """Every environment variable ``build_resources()`` reads, with its field and default."""
    from fraud_assets.defs.resources import build_resources

    calls = _binding_calls(ast.parse(RESOURCES_FILE.read_text(encoding="utf-8")))
    names = {env for _, _, env in calls}
    with pytest.MonkeyPatch.context() as patch:
        for name in names & set(os.environ):
            patch.delenv(name)
        defaults = build_resources()
    return [
        EnvBinding(env, resource, field, getattr(defaults[resource], field))
        for resource, field, env in calls
    ]


def env_names() -> set[str]:
    return {binding.env for binding in env_bindings()}
