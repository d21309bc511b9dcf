"""Headless Chromium driven through the Chrome DevTools protocol over a pipe
(`--remote-debugging-pipe`: JSON messages ending in NUL on file descriptors 3 and 4), so a test
sees a page's console errors, uncaught exceptions and failed loads without a websocket client.

    with Browser() as browser:                       # skips when chromium is not installed
        page = browser.open("file:///.../report.html")
        page.evaluate("document.title"); page.errors(); page.screenshot(1200, 2000)

Debian's `chromium` package (`apt-get install chromium`; .ci/run installs it). Under CI=true a
skip fails (tests/skip_guard.py), so CI cannot pass without the browser.
"""
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time

import pytest


def binary() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    return path


def _above(fd: int, lowest: int) -> int:
    """`fd` moved to a descriptor number >= lowest."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, lowest)
    os.close(fd)
    return moved


class Browser:
    def __init__(self):
        chromium = binary()
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_r, self._to_w = os.pipe()
        self._from_r, from_w = os.pipe()
        # Above 4, so that `3<&` and `4>&` cannot overwrite one of them (bash: dash reads one
        # digit only).
        to_r, from_w = (_above(fd, 10) for fd in (to_r, from_w))
        args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--hide-scrollbars", "--remote-debugging-pipe",
                f"--user-data-dir={self._profile}", "about:blank"]
        # The browser reads commands on its fd 3 and writes answers and events on its fd 4.
        self._proc = subprocess.Popen(
            ["/bin/bash", "-c", f'exec "$0" "$@" 3<&{to_r} 4>&{from_w}', *args],
            pass_fds=(to_r, from_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_r)
        os.close(from_w)
        self._buffer, self._id, self.events = b"", 0, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, method: str, session: str = None, timeout: float = 60, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_w, json.dumps(message).encode() + b"\0")
        reply = self.wait(lambda m, i=self._id: m.get("id") == i, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def wait(self, match, timeout: float = 60) -> dict:
        """The first message `match` accepts; events met on the way are kept in `events`."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "method" in message:
                    self.events.append(message)
                if match(message):
                    return message
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium exited")
            self._buffer += chunk

    def open(self, url: str, timeout: float = 60) -> "Page":
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        self.send("Page.navigate", session=session, url=url)
        self.wait(lambda m: m.get("method") == "Page.loadEventFired"
                  and m.get("sessionId") == session, timeout)
        return Page(self, session)

    def close(self):
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        os.close(self._to_w)
        try:
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._from_r)
        shutil.rmtree(self._profile, ignore_errors=True)


class Page:
    def __init__(self, browser: Browser, session: str):
        self.browser, self.session = browser, session

    def evaluate(self, expression: str, timeout: float = 60):
        """The JSON value of `expression` (a promise is awaited)."""
        result = self.browser.send("Runtime.evaluate", session=self.session, timeout=timeout,
                                   expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions and failed loads of this page."""
        out = []
        for event in self.browser.events:
            if event.get("sessionId") != self.session:
                continue
            params = event.get("params", {})
            if event["method"] == "Runtime.exceptionThrown":
                out.append(json.dumps(params["exceptionDetails"])[:500])
            elif (event["method"] == "Runtime.consoleAPICalled"
                  and params["type"] in ("error", "warning", "assert")):
                out.append(" ".join(str(a.get("value")) for a in params["args"]))
            elif event["method"] == "Log.entryAdded" and params["entry"]["level"] in (
                    "error", "warning"):
                out.append(f"{params['entry']['text']} {params['entry'].get('url', '')}")
        return out

    def screenshot(self, width: int, height: int) -> bytes:
        """PNG of the page's top width x height CSS pixels."""
        self.browser.send("Emulation.setDeviceMetricsOverride", session=self.session,
                          width=width, height=height, deviceScaleFactor=1, mobile=False)
        data = self.browser.send("Page.captureScreenshot", session=self.session,
                                 format="png")["data"]
        return base64.b64decode(data)
