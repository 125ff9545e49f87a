"""Retraining on a rhythm: the model assets re-materialize weekly and after drift is found.

Declarative automation, evaluated by the daemon through :data:`model_retraining_sensor`:

- ``fraud_model`` is requested on the weekly tick of :data:`RETRAIN_CRON`, and on the first
  tick after ``feature_drift``'s check ``no_significant_drift`` turned failed (once per
  failure: a drift that persists does not retrain every hour on the same data);
- ``model_selection`` and ``promoted_model`` are requested on the same tick as the asset
  they follow, so the daemon launches the three in one run. ``model_quality_gate`` is a
  blocking check of ``model_selection`` in that run: when it fails, the run skips
  ``promoted_model`` and the stream keeps the current model.

A manual materialization of ``fraud_model`` (the UI, ``train_and_promote``) is left alone:
selection and promotion follow only a training that automation requested.
"""

import dagster as dg

RETRAIN_CRON = "0 3 * * 1"
"""Every Monday at 03:00 (UTC): the weekly retraining."""
RETRAIN_TIMEZONE = "UTC"

DRIFT_ASSET = dg.AssetKey("feature_drift")
"""The drift audit (``defs/drift.py``), by key: it follows the promoted model, so importing
it here would make a circle."""

MODEL_ASSETS = ("fraud_model", "model_selection", "promoted_model")

weekly_tick = dg.AutomationCondition.cron_tick_passed(RETRAIN_CRON, RETRAIN_TIMEZONE).with_label(
    f"weekly tick ({RETRAIN_CRON} {RETRAIN_TIMEZONE})"
)

drift_found = (
    dg.AutomationCondition.asset_matches(
        DRIFT_ASSET, dg.AutomationCondition.any_checks_match(dg.AutomationCondition.check_failed())
    )
    .newly_true()
    .with_label("feature_drift check newly failed")
)

retrain = (
    (weekly_tick | drift_found).since_last_handled()
    & ~dg.AutomationCondition.in_progress()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.any_deps_missing()
).with_label("retrain")
"""``fraud_model``: a weekly tick or a new drift failure since it was last requested or
updated, unless it or the audited data is being written, or the audited data is missing."""

with_training = dg.AutomationCondition.any_deps_match(
    dg.AutomationCondition.will_be_requested()
).with_label("its parent is requested on this tick")
"""``model_selection``: only together with a training run that automation requested."""

promote_after_gate = with_training.with_label("with its selection, behind model_quality_gate")
"""``promoted_model``: with its selection, in the same run, where the blocking gate decides.

Not ``all_deps_blocking_checks_passed()``: the gate has no condition of its own, so on the
tick that requests the selection it counts as neither passed nor requested, and that
condition would hold the promotion back from every automated run."""

model_retraining_sensor = dg.AutomationConditionSensorDefinition(
    "model_retraining",
    target=dg.AssetSelection.assets(*MODEL_ASSETS),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    run_tags={"fraud_assets/trigger": "automation"},
    description="Evaluates the model assets' automation conditions: retrain, select and "
    "promote (behind model_quality_gate) weekly and after the drift check fails.",
)
