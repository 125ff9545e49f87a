"""Fuzzing the scoring stream: 10,000 mixed valid and invalid messages through the real broker.

How hypothesis is used, and what it adds where: an example draws a ``random.Random``
(``st.randoms`` with a real PRNG, so 10,000 messages do not exhaust Hypothesis' choice buffer)
and pools of floats, texts and raw bytes from Hypothesis strategies; the 10,000 messages are
then built deterministically from them, so one bounded run of the real scoring query (about
15 s of the test's time) covers every kind. Shrinking is off: one run of the stream is the
unit of work.

- In CI (``make test``, the default ``--fuzz-examples=1``) this is one example pinned by
  :data:`FUZZ_SEED`: a fixed, seeded run. Hypothesis' first example is its simplest (pools of
  zeros and empty strings), so there the variety comes from the seeded ``random.Random``
  that widens the pools with awkward values (huge, tiny, negative zero, non-ASCII text) and
  builds the messages; Hypothesis adds little beyond that one draw. That is kept cheap on
  purpose: every example is one run of the stream.
- In long mode (``make fuzz``, ``--fuzz-examples=N`` with N > 1) Hypothesis explores N
  examples from a fresh random seed (richer pools: boundary floats, arbitrary Unicode,
  random bytes), one stream run each, like ``make chaos`` is the long form of the fault
  tests. A failure prints the seed to reproduce it with (``--hypothesis-seed``).

What each kind must become is stated by the generator, independently of the parser: a
valid message is scored exactly once; an invalid one lands in ``transactions_dlq`` and the
quarantine table with its original bytes, its source partition/offset and the reason of the
*first* rule it breaks (each generated message breaks exactly one).
"""

import json
import random
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from fraud_assets.core.contracts import EVENT_TIME_BASE, PCA_COLUMNS, REQUIRED_MESSAGE_FIELDS
from fraud_assets.core.paths import StreamPaths
from fraud_assets.core.queries import await_query
from fraud_assets.core.registry import Promotion
from fraud_assets.core.scoring import MAX_MESSAGE_BYTES, parse_transactions
from fraud_assets.core.settings import KafkaSettings, Topics
from fraud_assets.core.stream import ScoringBatchWriter, StreamSettings, start_scoring_query
from fraud_assets.kafka.io import produce_messages, read_topic
from fraud_assets.kafka.producer import format_event_time
from fraud_assets_tests.factories import (
    json_bytes,
    kafka_record,
    kafka_records_df,
    separable_model,
)

pytestmark = pytest.mark.integration

MESSAGE_COUNT = 10_000
NUMBER_FIELDS = ("Time", *PCA_COLUMNS, "Amount")
PROMOTION = Promotion("fuzz-lr", 0.5, "fixed", "2026-01-01T00:00:00+00:00")


@dataclass(frozen=True)
class Fuzzed:
    """One generated message and what the stream must make of it."""

    kind: str
    key: bytes | None
    value: bytes | None
    reason: str | None
    """The expected rejection reason; ``None`` for a valid message."""
    transaction_id: str | None = None
    """Set for valid messages: the id that must appear once in the scored table."""


@dataclass(frozen=True)
class Pools:
    """Values drawn by hypothesis, from which the messages are built."""

    rng: random.Random
    floats: list[float]
    amounts: list[float]
    texts: list[str]
    blobs: list[bytes]

    def widened(self) -> "Pools":
        """The pools plus awkward values from ``rng`` (see the module docstring)."""
        rng = self.rng
        floats = [rng.uniform(-1e3, 1e3) for _ in range(40)] + [rng.gauss(0, 5) for _ in range(40)]
        floats += [0.0, -0.0, 5e-324, -2.2250738585072014e-308, 1e300, -1e300, 123456789.0]
        amounts = [round(rng.expovariate(1 / 90), 2) for _ in range(40)] + [0.0, 1e9, 5e-324]
        alphabet = string.printable + 'éß中文🙂\u0000\u2028"\\{}[]'
        texts = ["".join(rng.choices(alphabet, k=rng.randint(0, 30))) for _ in range(40)]
        blobs = [rng.randbytes(rng.randint(0, 60)) for _ in range(20)]
        return Pools(
            rng,
            self.floats + floats,
            self.amounts + amounts,
            self.texts + texts,
            self.blobs + blobs,
        )


# --- message builders ------------------------------------------------------------------------


def valid_fields(pools: Pools, transaction_id: str) -> dict[str, object]:
    """A contract-valid message as a dict (``Class`` sometimes null or absent)."""
    rng = pools.rng
    seconds = rng.uniform(0, 172_800)
    message: dict[str, object] = {
        "transaction_id": transaction_id,
        "event_time": format_event_time(EVENT_TIME_BASE + timedelta(seconds=seconds)),
        "Time": seconds,
    }
    for name in PCA_COLUMNS:
        message[name] = rng.choice(pools.floats)
    message["Amount"] = rng.choice(pools.amounts)
    label = rng.random()
    if label < 0.6:
        message["Class"] = rng.choice((0, 1))
    elif label < 0.8:
        message["Class"] = None
    return message


def shuffled_with_extras(pools: Pools, message: dict[str, object]) -> dict[str, object]:
    """``message`` with fields in random order and unknown extra fields (both accepted)."""
    rng = pools.rng
    items = list(message.items())
    for _ in range(rng.randint(0, 3)):
        name = "x_" + "".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 8)))
        extra = rng.choice(
            [rng.choice(pools.texts), rng.choice(pools.floats), None, [1, "a"], {"nested": True}]
        )
        items.append((name, extra))
    rng.shuffle(items)
    return dict(items)


def encode(message: object) -> bytes:
    return json_bytes(message)  # type: ignore[arg-type]


def key_for(pools: Pools, transaction_id: str | None) -> bytes | None:
    """The transaction id as key, or (one time in ten) no key: keys are not validated."""
    if transaction_id is None or pools.rng.random() < 0.1:
        return None
    return transaction_id.encode()


def make_valid(pools: Pools, tid: str) -> Fuzzed:
    message = valid_fields(pools, tid)
    if pools.rng.random() < 0.7:
        message = shuffled_with_extras(pools, message)
    return Fuzzed("valid", key_for(pools, tid), encode(message), None, tid)


def make_not_json(pools: Pools, tid: str) -> Fuzzed:
    text = "<" + pools.rng.choice(pools.texts)  # "<" starts no JSON value
    return Fuzzed("not_json", key_for(pools, tid), text.encode(), "malformed_json")


def make_truncated(pools: Pools, tid: str) -> Fuzzed:
    whole = encode(valid_fields(pools, tid))
    cut = pools.rng.randint(1, len(whole) - 1)  # the closing brace is always lost
    return Fuzzed("truncated", key_for(pools, tid), whole[:cut], "malformed_json")


def make_array(pools: Pools, tid: str) -> Fuzzed:
    items = [valid_fields(pools, f"{tid}-{i}") for i in range(pools.rng.randint(1, 2))]
    return Fuzzed("json_array", key_for(pools, tid), encode(items), "malformed_json")


def make_scalar(pools: Pools, tid: str) -> Fuzzed:
    rng = pools.rng
    scalar = rng.choice([rng.choice(pools.floats), rng.choice(pools.texts), True, False, None, 7])
    return Fuzzed("json_scalar", key_for(pools, tid), encode(scalar), "malformed_json")


def make_missing_field(pools: Pools, tid: str) -> Fuzzed:
    message = valid_fields(pools, tid)
    name = pools.rng.choice(REQUIRED_MESSAGE_FIELDS)
    if pools.rng.random() < 0.5:
        del message[name]
    else:
        message[name] = None  # explicit null: the same rule
    reason = f"missing_or_invalid_field:{name}"
    return Fuzzed("missing_field", key_for(pools, tid), encode(message), reason)


def make_wrong_type(pools: Pools, tid: str) -> Fuzzed:
    """A number given as text, bool, object or list; or a non-integer label."""
    rng = pools.rng
    message = valid_fields(pools, tid)
    name = rng.choice((*NUMBER_FIELDS, "Class", "event_time"))
    if name == "Class":
        message[name] = rng.choice(["1", True, 0.5, {"v": 1}])
        reason = "malformed_json"
    elif name == "event_time":
        # Spark reads any JSON token into a string field: a bool or an object becomes its
        # text, which is then not a timestamp.
        message[name] = rng.choice([True, False, {"at": "2013-09-01"}, ["2013-09-01"]])
        reason = "invalid_event_time"
    else:
        number = rng.choice(pools.floats)
        message[name] = rng.choice([repr(number), True, False, {"v": number}, [number]])
        reason = "malformed_json"
    return Fuzzed("wrong_type", key_for(pools, tid), encode(message), reason)


def make_non_finite(pools: Pools, tid: str) -> Fuzzed:
    message = valid_fields(pools, tid)
    name = pools.rng.choice(NUMBER_FIELDS)
    message[name] = pools.rng.choice([float("nan"), float("inf"), float("-inf")])
    return Fuzzed("non_finite", key_for(pools, tid), encode(message), f"non_finite:{name}")


def make_negative_amount(pools: Pools, tid: str) -> Fuzzed:
    message = valid_fields(pools, tid)
    message["Amount"] = -max(0.01, abs(pools.rng.choice(pools.amounts)))
    return Fuzzed("negative_amount", key_for(pools, tid), encode(message), "negative_amount")


def make_invalid_class(pools: Pools, tid: str) -> Fuzzed:
    message = valid_fields(pools, tid)
    message["Class"] = pools.rng.choice([2, -1, 3, 100, -7])
    return Fuzzed("invalid_class", key_for(pools, tid), encode(message), "invalid_class")


def make_bad_event_time(pools: Pools, tid: str) -> Fuzzed:
    rng = pools.rng
    message = valid_fields(pools, tid)
    letters = "".join(rng.choices(string.ascii_letters, k=rng.randint(1, 12)))
    message["event_time"] = rng.choice(
        ["not a time", "2013-13-45T00:00:00Z", "", "x-" + letters, "2013-09-01T25:61:00Z"]
    )
    return Fuzzed("bad_event_time", key_for(pools, tid), encode(message), "invalid_event_time")


def make_oversized(pools: Pools, tid: str) -> Fuzzed:
    message = valid_fields(pools, tid)
    message["x_padding"] = "p" * (MAX_MESSAGE_BYTES + pools.rng.randint(1, 4096))
    return Fuzzed("oversized", key_for(pools, tid), encode(message), "oversized")


def make_empty_value(pools: Pools, tid: str) -> Fuzzed:
    return Fuzzed("empty_value", key_for(pools, tid), b"", "malformed_json")


def make_null_value(pools: Pools, tid: str) -> Fuzzed:
    # A tombstone: Kafka clients need a key when the value is null.
    return Fuzzed("null_value", tid.encode(), None, "empty_message")


def make_non_utf8(pools: Pools, tid: str) -> Fuzzed:
    value = b"\xff\xfe" + pools.rng.choice(pools.blobs)  # 0xFF never occurs in UTF-8
    return Fuzzed("non_utf8", key_for(pools, tid), value, "malformed_json")


BUILDERS: dict[str, tuple[Callable[[Pools, str], Fuzzed], int]] = {
    # kind: (builder, weight)
    "valid": (make_valid, 50),
    "not_json": (make_not_json, 4),
    "truncated": (make_truncated, 5),
    "json_array": (make_array, 3),
    "json_scalar": (make_scalar, 3),
    "missing_field": (make_missing_field, 6),
    "wrong_type": (make_wrong_type, 6),
    "non_finite": (make_non_finite, 6),
    "negative_amount": (make_negative_amount, 4),
    "invalid_class": (make_invalid_class, 4),
    "bad_event_time": (make_bad_event_time, 4),
    "oversized": (make_oversized, 1),
    "empty_value": (make_empty_value, 1),
    "null_value": (make_null_value, 1),
    "non_utf8": (make_non_utf8, 2),
}


def build_messages(pools: Pools, count: int) -> list[Fuzzed]:
    """``count`` messages: every kind at least once, the rest drawn by weight."""
    kinds = list(BUILDERS)
    weights = [weight for _, weight in BUILDERS.values()]
    chosen = kinds + pools.rng.choices(kinds, weights=weights, k=count - len(kinds))
    pools.rng.shuffle(chosen)
    return [BUILDERS[kind][0](pools, f"fz-{index:05d}") for index, kind in enumerate(chosen)]


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
pools_strategy = st.builds(
    Pools,
    rng=st.randoms(use_true_random=True),
    floats=st.lists(finite, min_size=20, max_size=60),
    amounts=st.lists(st.floats(min_value=0, max_value=1e5), min_size=10, max_size=30),
    texts=st.lists(st.text(max_size=40), min_size=10, max_size=30),
    blobs=st.lists(st.binary(max_size=60), min_size=5, max_size=20),
)


# --- the test --------------------------------------------------------------------------------


def text_of(value: bytes | None) -> str | None:
    """How the dead letter carries original bytes: UTF-8 text, invalid bytes replaced."""
    return None if value is None else value.decode("utf-8", errors="replace")


FUZZ_SEED = 20260105
"""The seed of the one example CI runs (``--fuzz-examples=1``)."""

FUZZ_SETTINGS = settings(
    deadline=None,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


def test_ten_thousand_fuzzed_messages_are_scored_or_dead_lettered(
    request, spark, kafka_broker, unique_topics, tmp_path_factory
):
    examples = request.config.getoption("fuzz_examples")

    @settings(FUZZ_SETTINGS, max_examples=examples)
    @given(pools=pools_strategy)
    def fuzz(pools: Pools) -> None:
        check_fuzzed_stream(pools, spark, kafka_broker, unique_topics, tmp_path_factory)

    if examples == 1:
        fuzz = seed(FUZZ_SEED)(fuzz)
    fuzz()


def check_fuzzed_stream(pools, spark, kafka_broker, unique_topics, tmp_path_factory) -> None:
    """One example: the stream scores or dead-letters each of the messages built from ``pools``."""
    messages = build_messages(pools.widened(), MESSAGE_COUNT)
    kinds = Counter(message.kind for message in messages)
    assert set(kinds) == set(BUILDERS)
    expected_by_bytes: dict[tuple[bytes | None, bytes | None], Fuzzed] = {}
    for message in messages:
        previous = expected_by_bytes.setdefault((message.key, message.value), message)
        # The parser sees only bytes: identical bytes must expect the same outcome.
        assert previous.reason == message.reason, (previous, message)
    valid_ids = sorted(m.transaction_id for m in messages if m.reason is None)
    assert len(set(valid_ids)) == len(valid_ids) == kinds["valid"]

    topics = Topics(
        transactions=unique_topics(partitions=2, prefix="fuzz-tx"),
        alerts=unique_topics(partitions=1, prefix="fuzz-alerts"),
        dead_letter=unique_topics(partitions=1, prefix="fuzz-dlq"),
        kpi_partials=unique_topics(partitions=1, prefix="fuzz-partials"),
    )
    kafka = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers, topics=topics)
    state = tmp_path_factory.mktemp("fuzz")
    paths = StreamPaths.under(state / "tables", state / "checkpoints")
    assert produce_messages(kafka, topics.transactions, [(m.key, m.value) for m in messages]) == (
        MESSAGE_COUNT
    )
    # Where each message landed: the broker assigns partition and offset.
    sent = read_topic(kafka, topics.transactions)
    assert Counter((r.key, r.value) for r in sent) == Counter((m.key, m.value) for m in messages)
    expected_letters = {
        (r.partition, r.offset): (r, expected_by_bytes[(r.key, r.value)])
        for r in sent
        if expected_by_bytes[(r.key, r.value)].reason is not None
    }

    writer = ScoringBatchWriter(spark, kafka, paths, separable_model(spark), PROMOTION)
    query = start_scoring_query(spark, kafka, paths, writer, StreamSettings(), bounded=True)
    await_query(query)  # re-raises a failed query
    writer.wait_for_delivery()  # the last batch's outputs follow its ledger commit
    assert query.exception() is None
    assert writer.totals.scored == len(valid_ids)
    assert writer.totals.invalid == len(expected_letters)

    # Every valid transaction scored exactly once, nothing else; every message in the ledger.
    ledger = spark.read.parquet(str(paths.ledger_table))
    scored = ledger.where("reason IS NULL").select("transaction_id").collect()
    assert sorted(row.transaction_id for row in scored) == valid_ids
    assert ledger.count() == MESSAGE_COUNT

    # The dead-letter topic holds exactly the invalid messages, by source coordinates.
    letters = {}
    for record in read_topic(kafka, topics.dead_letter):
        letter = json.loads(record.value.decode("utf-8", errors="replace"))
        coordinates = (letter["source_partition"], letter["source_offset"])
        assert coordinates not in letters, f"duplicate dead letter for {coordinates}"
        letters[coordinates] = letter
    assert set(letters) == set(expected_letters)
    wrong_reasons = Counter()
    for coordinates, (source, expected) in expected_letters.items():
        letter = letters[coordinates]
        assert letter["source_topic"] == topics.transactions
        assert letter["reason"], coordinates
        if letter["reason"] != expected.reason:
            wrong_reasons[(expected.kind, expected.reason, letter["reason"])] += 1
        assert letter["key"] == text_of(source.key), coordinates
        assert letter["value"] == text_of(source.value), (expected.kind, coordinates)
    assert not wrong_reasons, f"(kind, expected, got): count = {dict(wrong_reasons)}"

    # The quarantine table holds the same dead letters as the topic.
    quarantine = spark.read.parquet(str(paths.quarantine_table)).select(
        "source_partition", "source_offset", "reason", "key", "value", "source_topic"
    )
    quarantined = {
        (row.source_partition, row.source_offset): (
            row.reason,
            row.key,
            row.value,
            row.source_topic,
        )
        for row in quarantine.collect()
    }
    assert quarantine.count() == len(quarantined)
    assert quarantined == {
        c: (letter["reason"], letter["key"], letter["value"], letter["source_topic"])
        for c, letter in letters.items()
    }


# --- known gaps --------------------------------------------------------------------------------


def _valid_text(**overrides: object) -> dict[str, object]:
    message: dict[str, object] = {
        "transaction_id": "gap",
        "event_time": "2013-09-01T00:00:10Z",
        "Time": 10.0,
        **{name: 0.5 for name in PCA_COLUMNS},
        "Amount": 3.0,
        "Class": 0,
    }
    message.update(overrides)
    return message


# Contract breaks that Spark's lenient JSON reader lets through, each with the rule that
# catches it (found by this fuzzer; checked on single records, fast and exact).
CONTRACT_BREAKS = {
    # Spark's JSON reader turns any token into a string field's text.
    "transaction_id_number": (
        json_bytes(_valid_text(transaction_id=12)),
        "missing_or_invalid_field:transaction_id",
    ),
    "transaction_id_bool": (
        json_bytes(_valid_text(transaction_id=True)),
        "missing_or_invalid_field:transaction_id",
    ),
    "transaction_id_object": (
        json_bytes(_valid_text(transaction_id={"a": 1})),
        "missing_or_invalid_field:transaction_id",
    ),
    "transaction_id_empty": (
        json_bytes(_valid_text(transaction_id="")),
        "missing_or_invalid_field:transaction_id",
    ),
    # ... and a number cast to a timestamp is a year: 12345 -> +12345-01-01.
    "event_time_number": (json_bytes(_valid_text(event_time=12345)), "invalid_event_time"),
    # Jackson stops after the first value: the rest of the record is never looked at.
    "trailing_garbage": (json_bytes(_valid_text()) + b"garbage", "malformed_json"),
    # Invalid UTF-8 inside a string becomes U+FFFD.
    "non_utf8_in_id": (
        json_bytes(_valid_text(transaction_id="@@")).replace(b"@@", b"\xff\xfe"),
        "invalid_utf8",
    ),
}


@pytest.mark.parametrize("name", sorted(CONTRACT_BREAKS))
def test_contract_breaks_the_json_reader_accepts_are_rejected(spark, name):
    value, expected_reason = CONTRACT_BREAKS[name]
    parsed = parse_transactions(kafka_records_df(spark, [kafka_record(value, offset=0)]))
    (row,) = parsed.select(F.col("reason")).collect()
    assert row.reason == expected_reason


def test_the_valid_template_of_the_contract_breaks_is_accepted(spark):
    parsed = parse_transactions(
        kafka_records_df(spark, [kafka_record(json_bytes(_valid_text()), offset=0)])
    )
    (row,) = parsed.select(F.col("reason")).collect()
    assert row.reason is None
