"""The scoring query compiles its code once: steady micro-batches generate no new classes.

A value that changes per batch (a timestamp, a batch id, a path) entering the plan as a
literal is new generated code, compiled by Janino and then by the JIT again on every
micro-batch: CPU of the fixed cost with nothing to show for it. This covers the streaming
path end to end on the real broker (Kafka source, the ledger job, the background delivery
with its Kafka and Parquet writes); ``unit/test_core_ledger.py`` covers the same functions
on batch DataFrames.
"""

import pytest

from fraud_assets.core.stream import ScoringBatchWriter
from fraud_assets_tests.integration.streams import fresh_run, score_in_parts

pytestmark = pytest.mark.integration


def test_steady_scoring_batches_compile_no_new_code(
    spark, kafka_broker, unique_topics, tmp_path, real_rows, model_and_promotion
):
    codegen = spark.sparkContext._jvm.org.apache.spark.metrics.source.CodegenMetrics

    def compiled() -> int:
        return codegen.METRIC_COMPILATION_TIME().getCount()

    model, promotion = model_and_promotion
    kafka, paths = fresh_run(kafka_broker, unique_topics, tmp_path, partitions=2)
    writer = ScoringBatchWriter(spark, kafka, paths, model, promotion)
    counts = []

    def before_part(index):
        # Each part is scored (and delivered) before the next one is produced.
        writer.wait_for_delivery()
        counts.append(compiled())

    parts = [real_rows.iloc[i * 100 : (i + 1) * 100] for i in range(8)]
    score_in_parts(spark, kafka, paths, writer, parts, before_part)
    counts.append(compiled())
    assert writer.totals.scored == 800
    # The first batches compile (unless an earlier test of the session left the same code in
    # Spark's cache); from the fourth part on nothing is new. The KPI query, by contrast,
    # compiles one class per batch (docs/performance.md): this count grew by one per batch
    # with it running beside.
    assert counts[-1] == counts[3], counts
