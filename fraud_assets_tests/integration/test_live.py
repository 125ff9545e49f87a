"""``fraud-assets live``: one command brings the Dagster UI to the stream at work, and stops.

Everything is real and started by the command itself, as a subprocess of the test on free
ports with its own state and Dagster home: the embedded broker, the code server, webserver
and daemon, training on a subset of the real data, the supervised ``scoring_stream`` run
(launched by the daemon's sensor), the digest's sensor, the paced replay. The assertions read
what the UI reads (Dagster's GraphQL over HTTP) and what headless Chromium renders. Every
process the command starts inherits a marker variable: after SIGTERM none may be left.

The tests of this module share one live system and run in order: the UI state, what a
person sees (screenshots in ``var/test-artefacts/live/``), then the stop and a second start
on the same state.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from fraud_assets.kafka.broker import free_port
from fraud_assets_tests.cdp import chromium_page
from fraud_assets_tests.dagster_dev import DagsterDev, log_tail, wait_until
from fraud_assets_tests.integration.test_bench_smoke import processes_with

# The long variant (about 7 minutes: training, the daemon's first stream run, a browser):
# `make test-live`, not `make test`.
pytestmark = [pytest.mark.integration, pytest.mark.live]

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = REPO_ROOT / "var" / "test-artefacts" / "live"
MARKER = "FRAUD_LIVE_TEST_RUN"
ROWS = 3000
"""Train and replay the first 3,000 rows plus every fraud (about 3,450 transactions)."""
UI_STATE_TIMEOUT_S = 300.0
"""Training on the subset, the daemon's first ticks, a run worker's Spark start-up and the
digest's own run, on 2 shared cores."""
STOP_TIMEOUT_S = 90.0
"""The replay, the daemon, the terminated runs (queries stop at a batch boundary), the
webserver and code server, the broker."""

RUNS_QUERY = """
query($statuses: [RunStatus!]) {
  runsOrError(filter: {pipelineName: "scoring_stream", statuses: $statuses}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}
"""
MATERIALIZATION_QUERY = """
query($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset {
      assetMaterializations(limit: 1) {
        runId timestamp metadataEntries { label __typename }
      }
    }
  }
}
"""
AUTOMATION_QUERY = """
{
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes {
        schedules { name scheduleState { status } }
        sensors { name sensorState { status } }
      }
    }
  }
}
"""


@dataclass
class Live:
    """A running ``fraud-assets live`` and how to reach it."""

    process: subprocess.Popen
    dev: DagsterDev
    marker: str
    log_path: Path
    state_dir: Path
    started: float

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_live(tmp_path: Path, name: str, marker: str, port: int) -> Live:
    state_dir, dagster_home = tmp_path / "state", tmp_path / "dagster_home"
    log_path = tmp_path / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRAUD_", "DAGSTER_"))}
    env.update({MARKER: marker, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"})
    command = [
        sys.executable, "-m", "fraud_assets", "--home", str(REPO_ROOT), "live",
        "--state-dir", str(state_dir), "--dagster-home", str(dagster_home),
        "--port", str(port), "--kafka-port", str(free_port()), "--rows", str(ROWS),
    ]  # fmt: skip
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
    dev = DagsterDev(
        url=f"http://127.0.0.1:{port}",
        port=port,
        pid=process.pid,
        log_path=log_path,
        dagster_home=dagster_home,
    )
    return Live(process, dev, marker, log_path, state_dir, time.monotonic())


def stop_live(live: Live) -> float:
    """SIGTERM, as Ctrl-C or ``kill`` would; the seconds it took to exit."""
    started = time.monotonic()
    live.process.send_signal(signal.SIGTERM)
    try:
        live.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        live.process.kill()
        live.process.wait()
        raise AssertionError(
            f"live ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s:\n{live.log()}"
        ) from None
    return time.monotonic() - started


def query(live: Live, text: str, **variables) -> dict | None:
    """A GraphQL answer, or None while the webserver is not up yet."""
    if live.process.poll() is not None:
        raise AssertionError(f"live exited with {live.process.returncode}:\n{live.log()}")
    try:
        return live.dev.graphql(text, variables)
    except OSError:
        return None


def started_stream_run(live: Live) -> dict | None:
    data = query(live, RUNS_QUERY, statuses=["STARTED"])
    runs = (data or {}).get("runsOrError", {}).get("results") or []
    return runs[0] if runs else None


def materialization(live: Live, key: str) -> dict | None:
    data = query(live, MATERIALIZATION_QUERY, path=[key])
    found = ((data or {}).get("assetOrError") or {}).get("assetMaterializations") or []
    return found[0] if found else None


def details(live: Live):
    return lambda: f"live log:\n{log_tail(live.log_path, 40)}"


@pytest.fixture(scope="module")
def live_system(tmp_path_factory) -> Iterator[Live]:
    tmp_path = tmp_path_factory.mktemp("live")
    live = start_live(tmp_path, "first", uuid.uuid4().hex, free_port())
    try:
        yield live
    finally:
        if live.process.poll() is None:
            stop_live(live)
        shutil.copyfile(live.log_path, _artefacts() / "first.log")


def _artefacts() -> Path:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    return ARTEFACTS


@pytest.mark.timeout(UI_STATE_TIMEOUT_S + 60)
def test_the_ui_shows_the_supervised_stream_at_work(live_system):
    live = live_system
    run = wait_until(
        lambda: started_stream_run(live), UI_STATE_TIMEOUT_S, "a started scoring_stream run",
        poll_s=3.0, details=details(live),
    )  # fmt: skip
    # Launched by the daemon's supervisor sensor: its run key and model tag are on the run.
    tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    assert tags.get("dagster/sensor_name") == "stream_supervisor", tags
    assert tags.get("fraud_assets/model_version"), tags

    remaining = max(10.0, UI_STATE_TIMEOUT_S - (time.monotonic() - live.started))
    for key, plot in (("alerts", "stream_health"), ("kpis", "kpi_plot")):
        event = wait_until(
            lambda key=key: materialization(live, key), remaining, f"a materialization of {key}",
            poll_s=3.0, details=details(live),
        )  # fmt: skip
        assert event["runId"] == run["runId"]
        labels = {entry["label"]: entry["__typename"] for entry in event["metadataEntries"]}
        assert labels[plot] == "MarkdownMetadataEntry"
        assert labels["dagster/row_count"] == "IntMetadataEntry"

    digest = wait_until(
        lambda: materialization(live, "alert_digest"), remaining, "alert_digest refreshed",
        poll_s=3.0, details=details(live),
    )  # fmt: skip
    assert digest["runId"] != run["runId"]  # its own run, launched by alert_digest_sensor
    labels = {entry["label"]: entry["__typename"] for entry in digest["metadataEntries"]}
    assert labels["latest_alerts"] == labels["largest_amounts"] == "TableMetadataEntry"

    automation = query(live, AUTOMATION_QUERY)["repositoriesOrError"]["nodes"][0]
    schedules = {s["name"]: s["scheduleState"]["status"] for s in automation["schedules"]}
    sensors = {s["name"]: s["sensorState"]["status"] for s in automation["sensors"]}
    assert schedules == {"hourly_alerts_audit": "RUNNING"}
    assert sensors["stream_supervisor"] == sensors["alert_digest_sensor"] == "RUNNING"
    # The model assets' declarative automation (weekly and after drift) is on as well.
    assert sensors["model_retraining"] == "RUNNING"

    seconds = time.monotonic() - live.started
    ready = wait_until(
        lambda: "the UI shows the stream at work" in live.log(), 30.0, "the ready line",
        details=details(live),
    )  # fmt: skip
    assert ready
    status = json.loads((live.state_dir / "live" / "status.json").read_text())
    print(f"\nlive: UI state after {seconds:.0f} s; the command's own milestones: {status}")


def assert_painted(path: Path) -> None:
    pixels = mpimg.imread(path)[..., :3]
    colours = np.unique((pixels.reshape(-1, 3) * 255).astype(np.uint8), axis=0)
    assert len(colours) > 50 and float(pixels.std()) > 0.05, f"{path} looks blank"


SHOW_MARKDOWN_OF = """
(() => {
  const row = [...document.querySelectorAll('tr')].find(
    tr => tr.firstElementChild && tr.firstElementChild.innerText.trim() === '%s');
  const button = row && [...row.querySelectorAll('*')].filter(
    el => el.innerText && el.innerText.trim() === '[Show Markdown]').pop();
  if (!button) return false;
  button.click();
  return true;
})()
"""
RENDERED_IMAGE = """
(() => {
  const img = [...document.querySelectorAll('img')].find(i => i.alt === '%s');
  return !!img && img.complete && img.naturalWidth > 400 && img.naturalHeight > 200
    ? [img.naturalWidth, img.naturalHeight] : false;
})()
"""


@pytest.mark.timeout(300)
def test_a_person_sees_the_digest_rows_and_the_kpi_plot(live_system, tmp_path):
    live = live_system
    wait_until(lambda: materialization(live, "alert_digest"), UI_STATE_TIMEOUT_S, "the digest",
               poll_s=3.0, details=details(live))  # fmt: skip
    # The first-visit "Join the Dagster community" dialog covers every page: skip it.
    assert query(live, "mutation { setNuxSeen }")["setNuxSeen"] is True
    shots = []
    with chromium_page() as page:
        page.goto(f"{live.dev.url}/assets/alert_digest?view=events")
        # The digest's tables render in the event: alert rows with their amount and score.
        page.wait_for("document.body.innerText.includes('largest_amounts')")
        header = page.wait_for(
            "[...document.querySelectorAll('th')].map(th => th.innerText.trim())"
            ".filter(t => ['transaction_id', 'Amount', 'fraud_prob', 'top_features'].includes(t))"
            ".length >= 4"
        )
        assert header
        rows = page.evaluate(
            "[...document.querySelectorAll('tbody tr')].filter(tr => tr.cells.length >= 8).length"
        )
        assert rows >= 2, f"the digest tables show {rows} alert rows"
        page.evaluate("document.querySelector('th').scrollIntoView({block: 'center'})")
        shots.append(page.screenshot(tmp_path / "alert_digest.png"))

        page.goto(f"{live.dev.url}/assets/kpis")
        page.wait_for("document.body.innerText.includes('kpi_plot')")
        shots.append(page.screenshot(tmp_path / "kpis_overview.png"))
        assert page.wait_for(SHOW_MARKDOWN_OF % "kpi_plot")
        size = page.wait_for(RENDERED_IMAGE % "KPI windows")
        assert size[0] > 400
        shots.append(page.screenshot(tmp_path / "kpis_plot.png"))

        page.goto(f"{live.dev.url}/assets/alerts")
        page.wait_for("document.body.innerText.includes('stream_health')")
        assert page.wait_for(SHOW_MARKDOWN_OF % "stream_health")
        assert page.wait_for(RENDERED_IMAGE % "stream health")
        shots.append(page.screenshot(tmp_path / "alerts_stream_health.png"))

        run = started_stream_run(live)
        page.goto(f"{live.dev.url}/runs/{run['runId']}")
        # The step, and its event log once loaded (the stream's reports, the alerts).
        page.wait_for(
            "document.body.innerText.includes('run_scoring_stream')"
            " && !document.body.innerText.includes('Loading run logs')"
        )
        shots.append(page.screenshot(tmp_path / "stream_run.png"))

        page.goto(f"{live.dev.url}/asset-groups")
        page.wait_for("document.body.innerText.includes('Global asset lineage')")
        time.sleep(3)  # the graph lays itself out after the page's text is there
        shots.append(page.screenshot(tmp_path / "lineage.png"))
    for shot in shots:
        assert_painted(shot)
        shutil.copyfile(shot, _artefacts() / shot.name)
    print(f"\nscreenshots: {_artefacts()}")


@pytest.mark.timeout(STOP_TIMEOUT_S + UI_STATE_TIMEOUT_S + 120)
def test_sigterm_stops_everything_and_the_next_start_reuses_the_state(live_system):
    live = live_system
    first_stream = started_stream_run(live)
    assert first_stream is not None
    assert processes_with(live.marker), "the marker must reach the processes it counts"
    stopped_in = stop_live(live)
    assert live.process.returncode == 0, live.log()
    # Broker, code server, webserver, daemon, run workers and their Spark JVMs, producer.
    assert processes_with(live.marker) == [], live.log()
    assert "stop: terminating run" in live.log()
    print(f"\nlive: stopped in {stopped_in:.0f} s")

    again = start_live(live.state_dir.parent, "second", uuid.uuid4().hex, free_port())
    try:
        run = wait_until(
            lambda: started_stream_run(again), UI_STATE_TIMEOUT_S, "a new stream run",
            poll_s=3.0, details=details(again),
        )  # fmt: skip
        assert run["runId"] != first_stream["runId"]
        log = again.log()
        # The same promoted model, the same broker state: no training, the replay resumes.
        assert "is promoted" in log and "no training" in log, log
        assert "audit: materializing" not in log
        position = [line for line in log.splitlines() if "replay:" in line and "position" in line]
        assert position and "from position 0 " not in position[0], position
        # The earlier stream run was terminated cleanly, not left in progress.
        canceled = query(again, RUNS_QUERY, statuses=["CANCELED"])["runsOrError"]["results"]
        assert first_stream["runId"] in {r["runId"] for r in canceled}
    finally:
        if again.process.poll() is None:
            stop_live(again)
        shutil.copyfile(again.log_path, _artefacts() / "second.log")
    assert processes_with(again.marker) == [], again.log()
