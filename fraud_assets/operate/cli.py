# ruff: noqa: T201 - the handlers of a command line report to the operator with print.
"""``fraud-assets model set-threshold|promote|history``: change what the stream alerts on.

A running scoring stream re-reads the promotion at the start of every micro-batch, so a
change made here applies from its next batch, without a restart. Every change is appended
to the registry's change log (who, when UTC, old/new version and threshold, policy, reason).
"""

import argparse
import getpass
import json

from fraud_assets.core.paths import ProjectPaths
from fraud_assets.core.registry import ModelRegistry, ModelRegistryError
from fraud_assets.errors import OperatorError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``model {set-threshold,promote,history}`` to the ``fraud-assets`` parser."""
    model = subparsers.add_parser(
        "model", help="change the promoted model or its alert threshold; show the change log"
    )
    model.add_argument(
        "--state-dir",
        default="",
        help="run state folder holding models/ (default: <home>/var, as FRAUD_STATE_DIR)",
    )
    actions = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")

    threshold = actions.add_parser(
        "set-threshold", help="keep the promoted version, alert at a new threshold"
    )
    threshold.add_argument("threshold", type=float, help="new alert threshold, in (0, 1)")
    _add_change_arguments(threshold)
    threshold.set_defaults(handler=set_threshold_command)

    promote = actions.add_parser("promote", help="score with another saved model version")
    promote.add_argument("version", help="a saved version, e.g. rf-20260101T000000Z")
    promote.add_argument("--threshold", type=float, required=True, help="alert threshold")
    promote.add_argument(
        "--policy", default="manual", help="what chose the threshold (default: manual)"
    )
    _add_change_arguments(promote)
    promote.set_defaults(handler=promote_command)

    history = actions.add_parser("history", help="print the change log, oldest first")
    history.add_argument("--json", action="store_true", help="one JSON object per line")
    history.set_defaults(handler=history_command)


def _add_change_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", required=True, help="why (recorded in the change log)")
    parser.add_argument(
        "--by", default=None, help="who makes the change (default: the OS user name)"
    )


def _registry(args: argparse.Namespace) -> ModelRegistry:
    return ModelRegistry(ProjectPaths.at(args.home, args.state_dir or None).models_dir)


def _who(args: argparse.Namespace) -> str:
    return args.by or getpass.getuser()


def set_threshold_command(args: argparse.Namespace) -> int:
    """``model set-threshold``: same version, new threshold, logged."""
    registry = _registry(args)
    try:
        before = registry.require_promoted()
        after = registry.set_threshold(args.threshold, changed_by=_who(args), reason=args.reason)
    except ModelRegistryError as error:
        raise OperatorError(str(error)) from None
    print(
        f"{after.version}: threshold {before.threshold} -> {after.threshold} "
        "(a running stream applies it from its next micro-batch)"
    )
    return 0


def promote_command(args: argparse.Namespace) -> int:
    """``model promote``: another saved version (with its threshold), logged."""
    registry = _registry(args)
    try:
        metrics = registry.metadata(args.version).get("metrics") or {}
        before = registry.promoted()
        after = registry.promote(
            args.version,
            args.threshold,
            args.policy,
            metrics.get("pr_auc"),
            changed_by=_who(args),
            reason=args.reason,
        )
    except ModelRegistryError as error:
        raise OperatorError(str(error)) from None
    was = f"{before.version} at {before.threshold}" if before else "nothing"
    print(
        f"promoted {after.version} at threshold {after.threshold} (was {was}; a running "
        "stream applies it from its next micro-batch)"
    )
    return 0


def history_command(args: argparse.Namespace) -> int:
    """``model history``: the change log, oldest first."""
    changes = _registry(args).change_log()
    if args.json:
        for record in json.loads(changes.to_json(orient="records", date_format="iso")):
            print(json.dumps(record, sort_keys=True))
        return 0
    if changes.empty:
        print("no promotion or threshold change recorded yet")
        return 0
    print(changes.to_string(index=False))
    return 0
