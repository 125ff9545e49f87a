"""The Dagster UI of the real ``dagster dev``, rendered by headless Chromium.

The pages are single-page-app routes: the HTML the server sends is an empty shell, so the
assertions read the DOM after Chromium has run the JavaScript (``--dump-dom``) and look
for the asset and op names as text nodes. Screenshots are kept in ``var/ui/`` (and the
test's tmp dir) for a person to look at; a blank screenshot fails the test.
"""

import shutil
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from fraud_assets.core.paths import ProjectPaths
from fraud_assets_tests.cdp import CHROMIUM, CHROMIUM_FLAGS, stop_chromium
from fraud_assets_tests.dagster_dev import (
    REPO_ROOT,
    DagsterDev,
    running_dagster_dev,
    wait_for_code_location,
)

pytestmark = pytest.mark.integration

VIRTUAL_TIME_BUDGET_MS = 15_000
RENDER_TIMEOUT_S = 90.0
"""How long one Chromium invocation may take (virtual time is usually ~3-5 s of wall)."""
PAGE_DEADLINE_S = 120.0
"""How long a page may take to show what is expected (dumps are repeated until then)."""
DUMP_WINDOW = "--window-size=1600,4000"
"""The window of a DOM dump: tall, because the asset catalog is a virtualized list that only
puts the rows in view into the DOM (at Chromium's default 800x600 the thirteenth asset,
``raw_transactions``, was never rendered)."""

PIPELINE_ASSETS = (
    "raw_transactions",
    "audited_transactions",
    "fraud_model",
    "model_selection",
    "promoted_model",
    "alerts",
    "kpis",
)
ASSET_GROUPS = ("audit", "train", "select", "stream", "audits")
SCREENSHOT_DIR = ProjectPaths(REPO_ROOT).var / "ui"


class _TextNodes(HTMLParser):
    """The stripped text nodes of a document, outside <script> and <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in ("script", "style"):
            self._hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden and data.strip():
            self.texts.append(data.strip())


def text_nodes(dom: str) -> list[str]:
    parser = _TextNodes()
    parser.feed(dom)
    return parser.texts


def run_chromium(url: str, *options: str) -> str:
    """Run headless Chromium once on ``url`` with a fresh profile; return its stdout.

    Chromium forks helpers (zygote, renderers): it runs in its own process group, which is
    killed on the way out whatever happens.
    """
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make setup-ui` (installs Debian's chromium)")
    profile = Path(tempfile.mkdtemp(prefix="fraud-ui-chromium-"))
    command = [
        str(CHROMIUM),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}",
        *options,
        url,
    ]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    timed_out = False
    try:
        stdout, stderr = process.communicate(timeout=RENDER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        timed_out = True
        stdout, stderr = b"", b""
    finally:
        stop_chromium(process, profile)
    if timed_out or process.returncode != 0:
        tail = stderr.decode(errors="replace").splitlines()[-15:]
        reason = f"timed out after {RENDER_TIMEOUT_S:.0f} s" if timed_out else "failed"
        raise AssertionError(
            f"chromium {reason} on {url} (exit {process.returncode}):\n" + "\n".join(tail)
        )
    return stdout.decode(errors="replace")


def dom_texts(url: str) -> list[str]:
    """The text nodes of ``url`` after Chromium ran its JavaScript, in a ``DUMP_WINDOW``."""
    return text_nodes(run_chromium(url, "--dump-dom", DUMP_WINDOW))


def render_until(url: str, expected: tuple[str, ...]) -> list[str]:
    """Dump the DOM of ``url`` until every ``expected`` text node is there; return the texts.

    The single-page app may still be loading its data on the first dump (the code server,
    a slow machine): dumps are repeated until ``PAGE_DEADLINE_S``.
    """
    deadline = time.monotonic() + PAGE_DEADLINE_S
    attempts = 0
    while True:
        attempts += 1
        texts = dom_texts(url)
        missing = [name for name in expected if name not in texts]
        if not missing:
            return texts
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{url} still lacks {missing} after {attempts} renderings; "
                f"its text was: {texts[:120]}"
            )
        time.sleep(2)


def screenshot(url: str, name: str, copy_to: Path) -> Path:
    """Screenshot ``url`` at 1600x1000 into ``var/ui/<name>`` and ``copy_to``; refuse blanks."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOT_DIR / name
    target.unlink(missing_ok=True)
    run_chromium(url, f"--screenshot={target}", "--window-size=1600,1000")
    assert target.exists(), f"chromium wrote no screenshot of {url}"
    pixels = mpimg.imread(target)[..., :3]
    assert pixels.shape[:2] == (1000, 1600), pixels.shape
    # A page that rendered nothing is one flat colour; the Dagster UI has a navigation bar,
    # text and borders: many distinct colours and a visible spread.
    colours = np.unique((pixels.reshape(-1, 3) * 255).astype(np.uint8), axis=0)
    assert len(colours) > 50 and float(pixels.std()) > 0.05, (
        f"the screenshot of {url} looks blank ({len(colours)} colours, std {pixels.std():.3f})"
    )
    shutil.copyfile(target, copy_to / name)
    return target


def dismiss_community_dialog(dev: DagsterDev) -> None:
    """Skip the UI's first-visit "Join the Dagster community" dialog, as a user would.

    It covers every page of a fresh instance; the UI's Skip button sends this mutation.
    """
    assert dev.graphql("mutation { setNuxSeen }")["setNuxSeen"] is True
    assert dev.graphql("{ shouldShowNux }")["shouldShowNux"] is False


def test_dagster_ui_shows_the_pipeline_assets_and_the_scoring_job(tmp_path):
    env = {"FRAUD_HOME": str(REPO_ROOT), "FRAUD_STATE_DIR": str(tmp_path / "state")}
    with running_dagster_dev(tmp_path / "dagster_home", env) as dev:
        location = wait_for_code_location(dev)
        dismiss_community_dialog(dev)

        catalog = f"{dev.url}/assets"
        texts = render_until(catalog, PIPELINE_ASSETS)
        assert "Assets" in texts
        screenshot(catalog, "assets.png", tmp_path)

        lineage = f"{dev.url}/asset-groups"
        texts = render_until(lineage, ASSET_GROUPS)
        assert "Global asset lineage" in texts
        screenshot(lineage, "lineage.png", tmp_path)

        job = f"{dev.url}/locations/{location}/jobs/scoring_stream"
        texts = render_until(job, ("run_scoring_stream",))
        assert "scoring_stream" in texts
        assert not any("not found" in text.lower() for text in texts), texts
        assert "fraud_assets/stream: scoring" in texts
        screenshot(job, "job_scoring_stream.png", tmp_path)

        # A route that does not exist renders "not found": the checks above can fail.
        missing = dom_texts(f"{dev.url}/locations/{location}/jobs/no_such_job")
        assert "run_scoring_stream" not in missing
        assert any("not found" in text.lower() for text in missing), missing
