"""The report in a real browser: a screenshot of its first screen, and a probe of what the
page did (images loaded, errors, where the summary sits).

    python -m sandbench.report.screenshot RESULTS_DIR docs/report.png

writes the report of RESULTS_DIR afresh and takes a 1280 x 800 screenshot of its first
screen with headless Chromium (/usr/bin/chromium, or $SANDBENCH_CHROMIUM).
"""

from __future__ import annotations

import html as html_lib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sandbench import settings

CHROMIUM = str(settings.value("SANDBENCH_CHROMIUM"))
WIDTH, HEIGHT = 1280, 800  # a laptop's first screen

# Runs first in <head>, so it sees every error and failed image, then reports on load.
PROBE = """<script>
(function () {
  var errors = [];
  var oldError = console.error;
  console.error = function () {
    errors.push(Array.prototype.join.call(arguments, ' '));
    oldError.apply(console, arguments);
  };
  window.addEventListener('error', function (e) {
    var t = e.target;
    errors.push(t && t.tagName ? 'failed to load ' + t.tagName : String(e.message));
  }, true);
  window.addEventListener('load', function () {
    var imgs = document.images, bad = 0;
    for (var i = 0; i < imgs.length; i++) {
      if (!(imgs[i].complete && imgs[i].naturalWidth > 0)) { bad++; }
    }
    var s = document.getElementById('summary');
    var r = s ? s.getBoundingClientRect() : null;
    var out = {images: imgs.length, broken: bad, errors: errors,
               viewport: [window.innerWidth, window.innerHeight],
               summary: r ? [r.top, r.bottom] : null,
               scroll_width: document.documentElement.scrollWidth};
    var pre = document.createElement('pre');
    pre.id = 'sandbench-probe';
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  });
})();
</script>"""


class BrowserError(RuntimeError):
    pass


def chromium(args: list[str], profile: Path, timeout: float = 180) -> subprocess.CompletedProcess[
        str]:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
         f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=timeout, check=False)


def console_errors(stderr: str) -> list[str]:
    """Chromium's own log of the page's console: errors and failed loads."""
    return [line for line in stderr.splitlines()
            if "CONSOLE" in line and re.search(r"error|Uncaught|Failed to load", line, re.I)]


def probe(html: Path, width: int = WIDTH, height: int = HEIGHT) -> dict[str, Any]:
    """Load a copy of the report with the probe script in a real browser window of
    width x height and return what it saw, plus "console" (Chromium's log of console errors).
    The report itself stays free of test code."""
    with tempfile.TemporaryDirectory(prefix="sandbench-probe-") as tmp:
        page = Path(tmp) / "report.html"
        text = html.read_text(encoding="utf-8")
        page.write_text(text.replace("<head>", "<head>\n" + PROBE, 1), encoding="utf-8")
        res = chromium([f"--window-size={width},{height}", "--virtual-time-budget=5000",
                        "--dump-dom", page.as_uri()], Path(tmp) / "profile")
    m = re.search(r'<pre id="sandbench-probe">(.*?)</pre>', res.stdout, re.S)
    if m is None:
        raise BrowserError(f"chromium printed no probe result (exit {res.returncode}): "
                           + res.stderr[-1500:])
    found: dict[str, Any] = json.loads(html_lib.unescape(m.group(1)))
    found["console"] = console_errors(res.stderr)
    return found


def screenshot(html: Path, png: Path, width: int = WIDTH, height: int = HEIGHT) -> Path:
    """The first screen of `html` at width x height as a PNG."""
    png = png.resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sandbench-shot-") as tmp:
        res = chromium([f"--screenshot={png}", f"--window-size={width},{height}",
                        html.resolve().as_uri()], Path(tmp) / "profile")
    if not png.exists():
        raise BrowserError(f"chromium wrote no screenshot (exit {res.returncode}): "
                           + res.stderr[-1500:])
    return png


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m sandbench.report.screenshot RESULTS_DIR OUT.png",
              file=sys.stderr)
        return 2
    from sandbench.report import write_report
    from sandbench.results import read_meta

    directory = Path(args[0])
    html = write_report(directory, baseline=str(read_meta(directory).get("baseline") or "host"))
    print(screenshot(html, Path(args[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
