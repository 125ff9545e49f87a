import pytest

from fraud_assets.kafka.producer import TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run(bucket: TokenBucket, clock: FakeClock, sends: int) -> float:
    """Send ``sends`` messages, sleeping on the fake clock; return the elapsed time."""
    start = clock.now
    for _ in range(sends):
        clock.now += bucket.delay()
    return clock.now - start


def test_unlimited_rate_never_waits():
    clock = FakeClock()
    bucket = TokenBucket(0.0, clock=clock)
    assert run(bucket, clock, 10_000) == 0.0


def test_sends_are_spaced_by_one_over_rate_after_the_burst():
    clock = FakeClock()
    bucket = TokenBucket(10.0, capacity=1, clock=clock)
    assert bucket.delay() == 0.0  # the bucket starts full
    assert bucket.delay() == pytest.approx(0.1)
    clock.now += 0.1
    assert bucket.delay() == pytest.approx(0.1)


@pytest.mark.parametrize(("rate", "capacity", "sends"), [(50.0, 5, 205), (1000.0, 100, 5100)])
def test_long_run_rate_matches_the_target(rate, capacity, sends):
    clock = FakeClock()
    bucket = TokenBucket(rate, capacity=capacity, clock=clock)
    elapsed = run(bucket, clock, sends)
    assert elapsed == pytest.approx((sends - capacity) / rate)


def test_idle_time_refills_only_up_to_capacity():
    clock = FakeClock()
    bucket = TokenBucket(100.0, capacity=3, clock=clock)
    run(bucket, clock, 50)
    clock.now += 3600  # an hour idle must not allow an hour's worth of burst
    burst_free = sum(1 for _ in range(10) if bucket.delay() == 0.0)
    assert burst_free == 3
