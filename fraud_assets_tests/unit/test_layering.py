"""Imports go one way: errors at the bottom, the command line at the top, no circles."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "fraud_assets"

CLI_MODULES = {"fraud_assets.cli", "fraud_assets.demo", "fraud_assets.operate.reset"}
"""Command-line modules besides ``fraud_assets/*/cli.py`` (they register subcommands)."""

# The benchmark is being rewritten (issue 16); its CLI still imports OperatorError through
# fraud_assets.cli, which re-exports it.
KNOWN_EXCEPTIONS = {("fraud_assets.bench.cli", "fraud_assets.cli")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every module of the package and the fraud_assets modules it imports (anywhere)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[module_name(path)] = {n for n in names if n.split(".")[0] == "fraud_assets"}
    return found


def is_cli(module: str) -> bool:
    return module in CLI_MODULES or module.endswith(".cli") or module == "fraud_assets.__main__"


def test_shared_errors_import_nothing_of_the_project():
    assert imports()["fraud_assets.errors"] == set()


def test_no_module_imports_a_command_line_module_except_the_command_line_itself():
    offenders = {
        (module, imported)
        for module, imported_names in imports().items()
        for imported in imported_names
        if is_cli(imported) and module not in ("fraud_assets.cli", "fraud_assets.__main__")
    }
    assert offenders - KNOWN_EXCEPTIONS == set()


def test_runners_share_the_end_to_end_steps_not_each_others_internals():
    graph = imports()
    assert "fraud_assets.end_to_end" in graph["fraud_assets.demo"]
    assert "fraud_assets.end_to_end" in graph["fraud_assets.chaos.harness"]
    assert not any(is_cli(name) for name in graph["fraud_assets.end_to_end"])
