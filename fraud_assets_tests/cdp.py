"""A headless Chromium driven over the DevTools protocol: navigate, wait, click, screenshot.

``chromium --dump-dom`` cannot click, and the Dagster UI keeps large metadata values (a plot,
a long table) behind a button that opens a dialog. This drives the same Debian Chromium
through its remote-debugging WebSocket (the ``websockets`` package Dagster's webserver
already brings), in its own process group, killed on the way out.
"""

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

from fraud_assets.kafka.broker import free_port

CHROMIUM = Path("/usr/bin/chromium")
# Checked on this machine: headless without a sandbox (root, no user namespaces), no GPU,
# and nothing that phones home or updates itself during a test.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


SETTLED = """
Promise.race([
  Promise.all(document.getAnimations()
    .filter(a => a.effect && a.effect.getComputedTiming().iterations !== Infinity)
    .map(a => a.finished.catch(() => null))),
  new Promise(resolve => setTimeout(resolve, 5000)),
]).then(() => true)
"""
"""Resolves once the finite CSS animations and transitions running now have ended (a dialog
fading in), at most 5 s: a page may start new ones all the time (a running step's bar)."""


class Page:
    """One browser tab: :meth:`call` sends a DevTools command and returns its result."""

    def __init__(self, socket) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._socket.recv(timeout=60))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for(self, expression: str, timeout_s: float = 60.0) -> Any:
        """Evaluate ``expression`` until it is truthy; its value. Raises on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:  # the page is still loading (no document.body yet)
                value = None
            if value:
                return value
            if time.monotonic() >= deadline:
                text = self.evaluate("document.body ? document.body.innerText.slice(0, 1500) : ''")
                raise AssertionError(f"timed out waiting for {expression!r}; page text:\n{text}")
            time.sleep(1.0)

    def screenshot(self, target: Path) -> Path:
        """The page as a person sees it, once the finite animations running now have ended.

        A dialog fades in over the page: captured at once, it is a ghost over the page under
        it (:data:`SETTLED`). Spinners (infinite animations) are left running.
        """
        self.evaluate(SETTLED)
        data = self.call("Page.captureScreenshot", format="png")["data"]
        target.write_bytes(base64.b64decode(data))
        return target


def stop_chromium(process: subprocess.Popen, profile: Path | str) -> None:
    """Kill a Chromium this test started (its own session: the whole process group, by its
    PID) and remove its throwaway profile."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)
    shutil.rmtree(profile, ignore_errors=True)


@contextmanager
def chromium_page() -> Iterator[Page]:
    """A fresh headless Chromium (new profile) and its first tab."""
    if not CHROMIUM.exists():
        raise AssertionError(f"{CHROMIUM} is missing: run `make setup-system`")
    port = free_port()
    profile = Path(tempfile.mkdtemp(prefix="fraud-cdp-"))
    process = subprocess.Popen(
        [
            str(CHROMIUM),
            *CHROMIUM_FLAGS,
            "--window-size=1600,1000",
            f"--remote-debugging-port={port}",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                    targets = [t for t in json.loads(r.read()) if t.get("type") == "page"]
                if targets:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError("chromium did not open its DevTools port")
            time.sleep(0.5)
        with connect(targets[0]["webSocketDebuggerUrl"], max_size=None) as socket:
            page = Page(socket)
            page.call("Page.enable")
            # Tall enough for a table or a plot below the asset's header.
            page.call(
                "Emulation.setDeviceMetricsOverride",
                width=1600,
                height=1300,
                deviceScaleFactor=1,
                mobile=False,
            )
            yield page
    finally:
        stop_chromium(process, profile)
