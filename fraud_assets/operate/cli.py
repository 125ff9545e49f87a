# ruff: noqa: T201 - the handlers of a command line report to the operator with print.
"""``fraud-assets model ...``: change what the stream alerts on, or scores in shadow.

``set-threshold``, ``promote`` and ``history``; ``challenger`` names a version the stream
scores in shadow beside the promoted one (shadow table only, never ``fraud_alerts``),
``clear-challenger`` stops that, ``promote-challenger`` promotes it once it has scored
enough labelled live traffic (``fraud_assets.core.shadow``).

A running scoring stream re-reads both pointers at the start of every micro-batch, so a
change made here applies from its next batch, without a restart. Every change is appended
to the registry's change log (who, when UTC, old/new version and threshold, policy, reason).
"""

import argparse
import getpass
import json

from fraud_assets.core import shadow
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

    challenger = actions.add_parser(
        "challenger", help="score another saved version in shadow beside the promoted one"
    )
    challenger.add_argument("version", help="a saved version other than the promoted one")
    challenger.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="its alert threshold in shadow (default: the one its selection recommended)",
    )
    _add_change_arguments(challenger)
    challenger.set_defaults(handler=challenger_command)

    clear = actions.add_parser("clear-challenger", help="stop scoring the challenger in shadow")
    _add_change_arguments(clear)
    clear.set_defaults(handler=clear_challenger_command)

    rule = shadow.EvidenceRule()
    winner = actions.add_parser(
        "promote-challenger",
        help="promote the challenger at its shadow threshold once its live evidence suffices",
    )
    winner.add_argument(
        "--min-labelled-rows",
        type=int,
        default=rule.min_labelled_rows,
        help=f"labelled transactions it must have scored in shadow ({rule.min_labelled_rows:,})",
    )
    winner.add_argument(
        "--min-frauds",
        type=int,
        default=rule.min_frauds,
        help=f"frauds among them (default {rule.min_frauds})",
    )
    _add_change_arguments(winner)
    winner.set_defaults(handler=promote_challenger_command)

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
        before = registry.promoted()
        after = registry.promote(
            args.version,
            args.threshold,
            args.policy,
            registry.recorded_pr_auc(args.version),
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


def challenger_command(args: argparse.Namespace) -> int:
    """``model challenger``: score a saved version in shadow, logged."""
    registry = _registry(args)
    try:
        named = registry.name_challenger(
            args.version, args.threshold, changed_by=_who(args), reason=args.reason
        )
    except ModelRegistryError as error:
        raise OperatorError(str(error)) from None
    print(
        f"challenger {named.version} at threshold {named.threshold}: a running stream scores "
        "it in shadow from its next micro-batch (tables/shadow; fraud_alerts keeps the "
        "promoted model's alerts)"
    )
    return 0


def clear_challenger_command(args: argparse.Namespace) -> int:
    """``model clear-challenger``: stop shadow scoring, logged."""
    cleared = _registry(args).clear_challenger(changed_by=_who(args), reason=args.reason)
    if cleared is None:
        raise OperatorError("no challenger is named: nothing to clear")
    print(f"challenger {cleared.version} cleared (from the stream's next micro-batch)")
    return 0


def promote_challenger_command(args: argparse.Namespace) -> int:
    """``model promote-challenger``: promote it if its shadow evidence meets the minimum."""
    paths = ProjectPaths.at(args.home, args.state_dir or None)
    rule = shadow.EvidenceRule(args.min_labelled_rows, args.min_frauds)
    try:
        promotion, comparison = shadow.promote_challenger(
            _registry(args),
            paths.stream_paths.shadow_table,
            rule,
            changed_by=_who(args),
            reason=args.reason,
        )
    except ModelRegistryError as error:
        raise OperatorError(str(error)) from None
    print(comparison.models.to_string(index=False))
    print(
        f"promoted {promotion.version} at threshold {promotion.threshold} (a running stream "
        "applies it from its next micro-batch)"
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
