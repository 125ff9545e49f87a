"""Training: a Spark ML pipeline that turns a transaction into a fraud probability.

VectorAssembler -> StandardScaler -> LogisticRegression with class weights (the reference
design). Frauds are 0.17% of the data, so each class gets half of the total weight: without
it the model learns to say "not fraud".
"""

from dataclasses import dataclass

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.ml.feature import StandardScaler, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from fraud_assets.core.contracts import FEATURE_COLUMNS, LABEL_COLUMN

WEIGHT_COLUMN = "class_weight"


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters and the holdout protocol of one training run."""

    holdout_fraction: float = 0.2
    max_iter: int = 100
    reg_param: float = 0.0
    elastic_net_param: float = 0.0


def time_ordered_split(df: DataFrame, holdout_fraction: float) -> tuple[DataFrame, DataFrame]:
    """Earliest ``1 - holdout_fraction`` of rows (by ``row_index``, i.e. ``Time``) to train.

    A random split lets the model see the future; the time-ordered one is what a deployed
    model faces.
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    n_rows = df.count()
    n_train = round(n_rows * (1.0 - holdout_fraction))
    if not 0 < n_train < n_rows:
        raise ValueError(
            f"a {holdout_fraction:g} holdout of {n_rows} rows leaves {n_train} rows to train "
            "and the rest to hold out: both need at least one row"
        )
    cutoff = df.select("row_index").orderBy("row_index").limit(n_train).agg(F.max("row_index"))
    cutoff_index = cutoff.first()[0]
    return df.where(F.col("row_index") <= cutoff_index), df.where(F.col("row_index") > cutoff_index)


def with_class_weight(df: DataFrame) -> DataFrame:
    """Add ``class_weight``: ``n / (2 n_class)`` so both classes weigh the same in total."""
    counts = {
        row[LABEL_COLUMN]: row["n"]
        for row in df.groupBy(LABEL_COLUMN).count().withColumnRenamed("count", "n").collect()
    }
    n = sum(counts.values())
    n_fraud, n_legit = counts.get(1, 0), counts.get(0, 0)
    if n_fraud == 0 or n_legit == 0:
        raise ValueError(f"training data needs both classes, got counts {counts}")
    return df.withColumn(
        WEIGHT_COLUMN,
        F.when(F.col(LABEL_COLUMN) == 1, F.lit(n / (2.0 * n_fraud))).otherwise(
            F.lit(n / (2.0 * n_legit))
        ),
    )


def build_pipeline(config: TrainingConfig) -> Pipeline:
    """The unfitted scoring pipeline."""
    return Pipeline(
        stages=[
            # Inputs are validated (and bad messages dead-lettered) before the model, so a
            # null here is a bug and must fail loudly rather than be skipped or scored NaN.
            VectorAssembler(
                inputCols=list(FEATURE_COLUMNS), outputCol="features_raw", handleInvalid="error"
            ),
            StandardScaler(
                inputCol="features_raw", outputCol="features", withMean=True, withStd=True
            ),
            LogisticRegression(
                featuresCol="features",
                labelCol=LABEL_COLUMN,
                weightCol=WEIGHT_COLUMN,
                maxIter=config.max_iter,
                regParam=config.reg_param,
                elasticNetParam=config.elastic_net_param,
                probabilityCol="probability",
                rawPredictionCol="rawPrediction",
                predictionCol="model_prediction",
            ),
        ]
    )


def fit(train: DataFrame, config: TrainingConfig) -> PipelineModel:
    """Fit the pipeline on ``train`` (which must hold both classes)."""
    return build_pipeline(config).fit(train.transform(with_class_weight))


def fraud_probability(probability: Column) -> Column:
    """P(fraud) from Spark ML's probability vector, with built-in functions (no UDF)."""
    return vector_to_array(probability).getItem(1)


def with_fraud_prob(model: PipelineModel, df: DataFrame) -> DataFrame:
    """``df`` plus ``fraud_prob``; the model's intermediate columns are dropped."""
    scored = model.transform(df)
    return scored.withColumn("fraud_prob", fraud_probability(F.col("probability"))).drop(
        "features_raw", "features", "rawPrediction", "probability", "model_prediction"
    )


@dataclass(frozen=True)
class HoldoutMetrics:
    """Ranking quality on the holdout (threshold-free)."""

    pr_auc: float
    roc_auc: float
    rows: int
    frauds: int


def holdout_metrics(scored: DataFrame) -> HoldoutMetrics:
    """PR-AUC (Spark's trapezoidal ``areaUnderPR``) and ROC-AUC of ``fraud_prob``."""
    evaluator = BinaryClassificationEvaluator(
        rawPredictionCol="fraud_prob", labelCol=LABEL_COLUMN, metricName="areaUnderPR"
    )
    labelled = scored.withColumn(LABEL_COLUMN, F.col(LABEL_COLUMN).cast("double"))
    counts = scored.agg(F.count(F.lit(1)), F.sum(LABEL_COLUMN)).first()
    return HoldoutMetrics(
        pr_auc=evaluator.evaluate(labelled),
        roc_auc=evaluator.setMetricName("areaUnderROC").evaluate(labelled),
        rows=int(counts[0]),
        frauds=int(counts[1] or 0),
    )
