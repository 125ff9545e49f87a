"""Scale-out settings reach Spark's conf; unset ones leave Spark's defaults alone."""

from fraud_assets.core.settings import SparkSettings
from fraud_assets.core.spark import spark_conf


def test_local_defaults_set_no_executor_sizes_and_bind_to_loopback():
    conf = spark_conf(SparkSettings())
    assert conf["spark.master"] == "local[*]"
    assert not {"spark.executor.memory", "spark.executor.cores", "spark.cores.max"} & set(conf)
    assert conf["spark.driver.host"] == conf["spark.driver.bindAddress"] == "127.0.0.1"


def test_cluster_settings_become_spark_conf():
    conf = spark_conf(
        SparkSettings(
            master="spark://10.0.0.5:7077",
            executor_memory="2g",
            executor_cores=2,
            cores_max=8,
            driver_host="code",
        )
    )
    assert conf["spark.master"] == "spark://10.0.0.5:7077"
    assert conf["spark.executor.memory"] == "2g"
    assert conf["spark.executor.cores"] == "2"
    assert conf["spark.cores.max"] == "8"
    # Executors elsewhere connect to the advertised name; the driver listens everywhere.
    assert conf["spark.driver.host"] == "code"
    assert conf["spark.driver.bindAddress"] == "0.0.0.0"


def test_extra_conf_still_wins():
    conf = spark_conf(
        SparkSettings(executor_memory="2g", extra_conf=(("spark.executor.memory", "3g"),))
    )
    assert conf["spark.executor.memory"] == "3g"


def test_reserved_realtime_slots_widen_only_the_default_local_master(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert spark_conf(SparkSettings(reserved_task_slots=2))["spark.master"] == "local[4]"
    # What the user chose is taken as given (checked against the topic at start instead).
    explicit = SparkSettings(master="local[2]", reserved_task_slots=2)
    assert spark_conf(explicit)["spark.master"] == "local[2]"
    cluster = SparkSettings(master="spark://h:7077", reserved_task_slots=2)
    assert spark_conf(cluster)["spark.master"] == "spark://h:7077"
    assert spark_conf(SparkSettings())["spark.master"] == "local[*]"


def test_python_call_site_capture_is_off():
    # Four extra JVM round trips per DataFrame/Column call otherwise (docs/performance.md).
    assert spark_conf(SparkSettings())["spark.python.sql.dataFrameDebugging.enabled"] == "false"


def test_stop_spark_returns_once_the_driver_jvm_is_gone(tmp_path):
    """In a process of its own: it stops that process's Spark, not the test session's."""
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "from pathlib import Path\n"
        "from fraud_assets.core.settings import SparkSettings\n"
        "from fraud_assets.core.spark import get_spark, stop_spark\n"
        "spark = get_spark(SparkSettings(master='local[1]'))\n"
        "assert spark.range(3).count() == 3\n"
        "pid = stop_spark()\n"
        "alive = Path(f'/proc/{pid}').exists()\n"
        "print(pid, alive)\n"
        "again = get_spark(SparkSettings(master='local[1]'))\n"
        "assert again.range(2).count() == 2\n"
        "print(stop_spark() != pid)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = done.stdout.split("\n")[:2]
    pid, alive = first.split()
    assert int(pid) > 0 and alive == "False"
    assert not Path(f"/proc/{pid}").exists()
    # A later session launches a JVM of its own.
    assert second == "True"
