"""Operate: an operator changes the alert threshold, the promoted model or the challenger.

Each job calls the model registry once; the running scoring stream applies the change from
its next micro-batch (no restart). Every change is recorded in the registry's change log
(who, when UTC, old/new version and threshold, policy, reason), which each run shows as a
table. Who: the run's ``dagster/user`` tag (set by Dagster+ for runs launched from the UI),
else the OS user of the code location (``OperatorResource.os_user``).
"""

import os
from dataclasses import asdict

import dagster as dg

from fraud_assets.core import shadow
from fraud_assets.core.registry import ModelRegistry, ModelRegistryError, Promotion
from fraud_assets.defs.metadata import table
from fraud_assets.defs.resources import ProjectResource

USER_TAG = "dagster/user"
"""The run tag naming the person who launched it (set by Dagster+)."""

PROMOTED_MODEL_KEY = dg.AssetKey("promoted_model")
"""The promotion pointer's asset: an operator's change is a new materialization of it."""

CHANGE_LOG_ROWS = 50
"""The newest changes shown in a run's metadata."""


class OperatorResource(dg.ConfigurableResource):
    """Who changes things when the run does not say (no ``dagster/user`` tag)."""

    os_user: str = "unknown"
    """The OS user of the code location's process (bound from ``$USER``)."""


class SetThresholdConfig(dg.Config):
    """A new alert threshold for the promoted model version."""

    threshold: float
    """In (0, 1): alert when ``fraud_prob >= threshold``."""
    reason: str
    """Why (recorded in the change log)."""


class PromoteVersionConfig(dg.Config):
    """Another saved model version to score with, and its threshold."""

    version: str
    """A saved version, e.g. ``rf-20260101T000000Z``."""
    threshold: float
    reason: str
    policy: str = "manual"
    """What chose the threshold (``manual`` unless it comes from a selection policy)."""


class NameChallengerConfig(dg.Config):
    """A saved model version to score in shadow beside the promoted one."""

    version: str
    """A saved version other than the promoted one, e.g. ``rf-20260101T000000Z``."""
    threshold: float | None = None
    """Its alert threshold in shadow; default: the one its selection recommended."""
    reason: str


class ClearChallengerConfig(dg.Config):
    """Why shadow scoring stops (recorded in the change log)."""

    reason: str


_EVIDENCE = shadow.EvidenceRule()


class PromoteChallengerConfig(dg.Config):
    """Promote the challenger at its shadow threshold, once it has shown enough live evidence."""

    reason: str
    min_labelled_rows: int = _EVIDENCE.min_labelled_rows
    """Labelled transactions it must have scored in shadow (0: no minimum)."""
    min_frauds: int = _EVIDENCE.min_frauds
    """Frauds among them."""


def changed_by(context: dg.OpExecutionContext, operator: OperatorResource) -> str:
    """The run's ``dagster/user`` tag, else the code location's OS user."""
    return context.run.tags.get(USER_TAG) or operator.os_user


def _report(
    context: dg.OpExecutionContext, registry: ModelRegistry, promotion: Promotion
) -> dg.Output[dict]:
    """The new promotion as the op's output, with the change log as metadata."""
    changes = registry.change_log()
    last = changes.iloc[-1]
    summary = {
        "model_version": promotion.version,
        "threshold": dg.MetadataValue.float(promotion.threshold),
        "policy": promotion.policy,
        "changed_by": str(last["changed_by"]),
        "reason": str(last["reason"]),
    }
    context.log_event(
        dg.AssetMaterialization(
            asset_key=PROMOTED_MODEL_KEY,
            metadata={**summary, "promoted_at": promotion.promoted_at},
        )
    )
    context.log.info(
        f"{promotion.version} at threshold {promotion.threshold}: the running stream applies "
        "it from its next micro-batch"
    )
    return dg.Output(
        asdict(promotion),
        metadata={
            **summary,
            "changes": len(changes),
            "change_log": table(changes.tail(CHANGE_LOG_ROWS).iloc[::-1]),
            "change_log_path": dg.MetadataValue.path(str(registry.change_log_path)),
        },
    )


@dg.op(description="Keep the promoted model version; alert at a new threshold from now on.")
def set_alert_threshold_op(
    context: dg.OpExecutionContext,
    config: SetThresholdConfig,
    project: ProjectResource,
    operator: OperatorResource,
) -> dg.Output[dict]:
    registry = project.registry
    try:
        promotion = registry.set_threshold(
            config.threshold, changed_by=changed_by(context, operator), reason=config.reason
        )
    except ModelRegistryError as error:
        raise dg.Failure(str(error)) from None
    return _report(context, registry, promotion)


@dg.op(description="Score with another saved model version (and its threshold) from now on.")
def promote_model_version_op(
    context: dg.OpExecutionContext,
    config: PromoteVersionConfig,
    project: ProjectResource,
    operator: OperatorResource,
) -> dg.Output[dict]:
    registry = project.registry
    try:
        promotion = registry.promote(
            config.version,
            config.threshold,
            config.policy,
            registry.recorded_pr_auc(config.version),
            changed_by=changed_by(context, operator),
            reason=config.reason,
        )
    except ModelRegistryError as error:
        raise dg.Failure(str(error)) from None
    return _report(context, registry, promotion)


@dg.op(description="Score another saved version in shadow beside the promoted one.")
def name_challenger_op(
    context: dg.OpExecutionContext,
    config: NameChallengerConfig,
    project: ProjectResource,
    operator: OperatorResource,
) -> dg.Output[dict]:
    registry = project.registry
    try:
        challenger = registry.name_challenger(
            config.version,
            config.threshold,
            changed_by=changed_by(context, operator),
            reason=config.reason,
        )
    except ModelRegistryError as error:
        raise dg.Failure(str(error)) from None
    context.log.info(
        f"challenger {challenger.version} at threshold {challenger.threshold}: the running "
        "stream scores it in shadow from its next micro-batch"
    )
    return _change_log_output(registry, asdict(challenger))


@dg.op(description="Stop scoring the challenger in shadow.")
def clear_challenger_op(
    context: dg.OpExecutionContext,
    config: ClearChallengerConfig,
    project: ProjectResource,
    operator: OperatorResource,
) -> dg.Output[dict]:
    registry = project.registry
    cleared = registry.clear_challenger(
        changed_by=changed_by(context, operator), reason=config.reason
    )
    if cleared is None:
        raise dg.Failure("no challenger is named: nothing to clear")
    return _change_log_output(registry, asdict(cleared))


@dg.op(
    description="Promote the challenger at its shadow threshold if its live evidence meets "
    "the minimum (labelled rows and frauds scored in shadow)."
)
def promote_challenger_op(
    context: dg.OpExecutionContext,
    config: PromoteChallengerConfig,
    project: ProjectResource,
    operator: OperatorResource,
) -> dg.Output[dict]:
    registry = project.registry
    rule = shadow.EvidenceRule(config.min_labelled_rows, config.min_frauds)
    try:
        promotion, _ = shadow.promote_challenger(
            registry,
            project.stream_paths.shadow_table,
            rule,
            changed_by=changed_by(context, operator),
            reason=config.reason,
        )
    except shadow.NotEnoughEvidenceError as error:
        raise dg.Failure(str(error), metadata={"models": table(error.comparison.models)}) from None
    except ModelRegistryError as error:
        raise dg.Failure(str(error)) from None
    return _report(context, registry, promotion)


def _change_log_output(registry: ModelRegistry, value: dict) -> dg.Output[dict]:
    changes = registry.change_log()
    return dg.Output(
        value,
        metadata={
            "challenger": value["version"],
            "threshold": dg.MetadataValue.float(value["threshold"]),
            "change_log": table(changes.tail(CHANGE_LOG_ROWS).iloc[::-1]),
            "change_log_path": dg.MetadataValue.path(str(registry.change_log_path)),
        },
    )


@dg.job(
    description="Operator: score a saved model version in shadow beside the promoted one "
    "(config: version, optional threshold, reason). The running stream applies it from its "
    "next micro-batch: both scores go to the shadow table, only the champion's alerts to "
    "fraud_alerts. Logged (who/when/what)."
)
def name_challenger():
    name_challenger_op()


@dg.job(description="Operator: stop shadow scoring (config: reason). Logged.")
def clear_challenger():
    clear_challenger_op()


@dg.job(
    description="Operator: promote the challenger at its shadow threshold, refused until it "
    "scored at least min_labelled_rows labelled transactions with min_frauds frauds in shadow "
    "(config). Logged; the challenger pointer is cleared."
)
def promote_challenger():
    promote_challenger_op()


@dg.job(
    description="Operator: change the alert threshold of the promoted model (config: "
    "threshold, reason). The running stream applies it from its next micro-batch; the change "
    "is logged (who/when/what)."
)
def set_alert_threshold():
    set_alert_threshold_op()


@dg.job(
    description="Operator: promote another saved model version with a threshold (config: "
    "version, threshold, reason). The running stream switches at its next micro-batch; the "
    "change is logged (who/when/what)."
)
def promote_model_version():
    promote_model_version_op()


@dg.definitions
def operate() -> dg.Definitions:
    # A module with a @dg.definitions function contributes only what it returns, so the jobs
    # are listed here. The resource is bound like those of defs/resources.py.
    user = dg.EnvVar("USER") if "USER" in os.environ else "unknown"
    return dg.Definitions(
        jobs=[
            set_alert_threshold,
            promote_model_version,
            name_challenger,
            clear_challenger,
            promote_challenger,
        ],
        resources={"operator": OperatorResource(os_user=user)},
    )
