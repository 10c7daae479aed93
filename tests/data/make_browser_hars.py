"""Record real browser HARs of Hasura console-like telemetry for tests/data/browser/.

Not a test and not a test dependency: run it by hand when the HARs should be made again.

    apt-get install -y chromium            # Debian's Chromium (Playwright's own download is not needed)
    .venv/bin/python -m pip install playwright
    .venv/bin/python tests/data/make_browser_hars.py

A real Chromium, driven by Playwright for Python, opens https://telemetry.hasura.io/ (resolved to
the test upstream on 127.0.0.1 with --host-resolver-rules, its self-signed certificate accepted),
then sends telemetry the way the console does: a POST with JSON and WebSocket frames, genuine and
violating payloads from examples/. Playwright writes the HAR (`playwright.har`, WebSocket messages
with `time` in milliseconds); Chromium's own DevTools export is not scriptable, so its shape is
covered by mitmproxy's chrome.har fixture (tests/data/mitmproxy/).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.harness import HOST, Upstream  # noqa: E402

PAYLOADS = ROOT / "examples" / "payloads"
VIOLATIONS = json.loads((ROOT / "examples" / "violations.json").read_text())


def payloads() -> dict[str, list]:
    http_ok = [json.loads((PAYLOADS / "cli-v1.3.json").read_text())]
    ws_ok = [json.loads((PAYLOADS / "console-v2.48-click.json").read_text())]
    http_bad = [c["body"] for c in VIOLATIONS if c["transport"] == "http"][:1]
    ws_bad = [c["body"] for c in VIOLATIONS if c["transport"] == "websocket"][:1]
    return {"http_ok": http_ok, "ws_ok": ws_ok, "http_bad": http_bad, "ws_bad": ws_bad}


SCRIPT = """async ({http, ws}) => {
  for (const body of http) {
    await fetch('/v1/http', {method: 'POST', headers: {'Content-Type': 'application/json'},
                             body: JSON.stringify(body)});
  }
  if (ws.length) {
    const sock = new WebSocket('wss://%s/v1/ws');
    await new Promise((ok, fail) => { sock.onopen = ok; sock.onerror = fail; });
    for (const body of ws) sock.send(JSON.stringify(body));
    await new Promise(r => setTimeout(r, 300));
    sock.close();
    await new Promise(r => setTimeout(r, 300));
  }
}""" % HOST


def record(out: Path, http: list, ws: list, upstream: Upstream) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[f"--host-resolver-rules=MAP {HOST} 127.0.0.1:{upstream.tls_port}", "--no-sandbox"])
        context = browser.new_context(record_har_path=str(out), ignore_https_errors=True)
        page = context.new_page()
        page.goto(f"https://{HOST}/")
        page.evaluate(SCRIPT, {"http": http, "ws": ws})
        context.close()
        browser.close()


def main() -> None:
    target = HERE / "browser"
    target.mkdir(exist_ok=True)
    p = payloads()
    with tempfile.TemporaryDirectory() as tmp:
        upstream = Upstream(Path(tmp)).start()
        try:
            record(target / "playwright-clean.har", p["http_ok"], p["ws_ok"], upstream)
            record(target / "playwright-violations.har", p["http_ok"] + p["http_bad"],
                   p["ws_ok"] + p["ws_bad"], upstream)
        finally:
            upstream.stop()
    for f in sorted(target.glob("*.har")):
        print(f, f.stat().st_size)


if __name__ == "__main__":
    main()
