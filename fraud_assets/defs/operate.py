"""Operate: an operator changes the alert threshold or the promoted model, from the UI.

Each job calls the model registry once; the running scoring stream applies the change from
its next micro-batch (no restart). Every change is recorded in the registry's change log
(who, when UTC, old/new version and threshold, policy, reason), which each run shows as a
table. Who: the run's ``dagster/user`` tag (set by Dagster+ for runs launched from the UI),
else the OS user of the code location (``OperatorResource.os_user``).
"""

import os
from dataclasses import asdict

import dagster as dg

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
        metrics = registry.metadata(config.version).get("metrics") or {}
        promotion = registry.promote(
            config.version,
            config.threshold,
            config.policy,
            metrics.get("pr_auc"),
            changed_by=changed_by(context, operator),
            reason=config.reason,
        )
    except ModelRegistryError as error:
        raise dg.Failure(str(error)) from None
    return _report(context, registry, promotion)


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
        jobs=[set_alert_threshold, promote_model_version],
        resources={"operator": OperatorResource(os_user=user)},
    )
