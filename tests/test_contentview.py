"""The `telewarden` content view (mitmweb): a judged flow's body with its findings beside it and the
scrubbed body for comparison, for flows judged live and flows loaded from a file."""

from __future__ import annotations

import io
import json

import pytest
from mitmproxy import contentviews, http
from mitmproxy import io as mio
from mitmproxy import websocket
from mitmproxy.test import taddons, tflow

from conftest import KEY, PAYLOADS
from telewarden.proxy import contentview
from telewarden.proxy.addon import Telewarden
from telewarden.engine.judge import Engine
from telewarden.proxy.exchange import apply_to_request, http_exchange
from telewarden.engine.model import Mode

LEAKY_CLI = {**PAYLOADS["cli-v2.48-no-error"],
             "data": {**PAYLOADS["cli-v2.48-no-error"]["data"],
                      "command": "hasura migrate apply --endpoint https://db.acme.internal --admin-secret s3cr3t"}}


def cli_flow(body: dict | bytes, host: str = "telemetry.hasura.io") -> http.HTTPFlow:
    f = tflow.tflow(resp=True)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    f.request = http.Request.make("POST", f"https://{host}/v1/http", raw,
                                  {"content-type": "application/json", "user-agent": "Go-http-client/1.1"})
    f.client_conn.sni = f.server_conn.sni = host
    return f


@pytest.fixture
def view(engine):
    v = contentview.register(lambda: engine, lambda: Mode.SCRUB)
    yield v
    contentview.register()  # leave a view without this test's engine behind


def show(flow, message=None, view_name="auto"):
    with taddons.context():
        return contentviews.prettify_message(message if message is not None else flow.request, flow, view_name)


def test_registered_and_chosen_for_telemetry_with_findings_beside_the_lines(view):
    f = cli_flow(LEAKY_CLI)
    res = show(f)
    assert res.view_name == "telewarden" and res.syntax_highlight == "yaml"
    text = res.text
    assert "SCRUB WOULD REPAIR  hasura/cli" in text
    assert "[1] hasura.cli.command-args  /data/command  high" in text
    lines = text.splitlines()
    marked = [lines[n + 1] for n, line in enumerate(lines) if line.strip() == "# >> [1] hasura.cli.command-args (high)"]
    assert len(marked) == 1 and marked[0].lstrip().startswith('"command": "hasura migrate apply --endpoint')
    assert max(len(line) for line in lines if line.startswith("#")) <= 110  # readable without scrolling sideways
    after = text.split("# --- after scrub: what scrub mode forwards ---")[1]
    assert '"command": "hasura migrate apply",' in after and "acme" not in after.split("# --- changes ---")[0]
    assert '# -        "command": "hasura migrate apply --endpoint' in text  # the change, as a diff


def test_not_chosen_for_other_traffic_or_responses_but_usable_by_name(view):
    other = cli_flow(LEAKY_CLI, host="example.org")
    assert show(other).view_name != "telewarden"
    assert "passed through unjudged" in show(other, view_name="telewarden").text
    f = cli_flow(LEAKY_CLI)
    assert show(f, f.response).view_name != "telewarden"
    assert "the server's response" in show(f, f.response, view_name="telewarden").text


def test_a_flow_judged_live_and_saved_shows_the_live_verdict_and_the_original_body(view, engine, tmp_path):
    f = cli_flow(LEAKY_CLI)
    verdict = engine.inspect(http_exchange(f), Mode.SCRUB)
    f.backup()  # the original, kept by mitmproxy (flow.revert() restores it)
    apply_to_request(f.request, verdict.repaired)
    Telewarden._annotate(f, verdict)  # what the addon stores on the flow
    path = tmp_path / "flows.mitm"
    with path.open("wb") as fh:
        mio.FlowWriter(fh).add(f)
    with path.open("rb") as fh:
        (loaded,) = list(mio.FlowReader(fh).stream())
    for flow in (f, loaded):
        text = show(flow).text
        assert "# judged live: SCRUBBED (1 scrubbed) rules: hasura.cli.command-args" in text
        assert "as the client sent it" in text
        assert "# >> [1] hasura.cli.command-args (high)" in text


def test_a_live_scrubbed_flow_without_backup_says_the_original_was_not_kept(view, engine):
    f = cli_flow(LEAKY_CLI)
    verdict = engine.inspect(http_exchange(f), Mode.SCRUB)
    apply_to_request(f.request, verdict.repaired)
    Telewarden._annotate(f, verdict)
    text = show(f).text
    assert "the original was not kept" in text and "no findings" in text
    assert "acme" not in text


def test_websocket_frames_from_the_client_are_judged(view):
    f = tflow.twebsocketflow()
    f.request = http.Request.make("GET", "https://telemetry.hasura.io/v1/ws", b"",
                                  {"upgrade": "websocket", "connection": "upgrade", "sec-websocket-version": "13",
                                   "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="})
    f.client_conn.sni = f.server_conn.sni = "telemetry.hasura.io"
    frame = json.loads(json.dumps(PAYLOADS["console-v2.0-source-default"]))
    frame["data"]["url"] = "/data/default/schema/public/tables/customers/modify"
    f.websocket = websocket.WebSocketData(messages=[
        websocket.WebSocketMessage(1, True, json.dumps(frame).encode(), 946681205),
        websocket.WebSocketMessage(1, False, b'{"ok":true}', 946681206)])
    client, server = f.websocket.messages
    res = show(f, client)
    assert res.view_name == "telewarden"
    assert "hasura.console.url-route" in res.text and "# >> [1] hasura.console.url-route" in res.text
    assert "/SCHEMA_NAME/tables/TABLE_NAME/modify" in res.text.split("after scrub")[1]
    assert show(f, server).view_name != "telewarden"
    assert "server-to-client" in show(f, server, view_name="telewarden").text


def test_sender_chosen_text_cannot_reorder_or_hide_lines(view):
    body = {**LEAKY_CLI, "data": {**LEAKY_CLI["data"], "command": "hasura version \u202e\x1b[2J\u2028x"}}
    text = show(cli_flow(body)).text
    assert "\u202e" not in text and "\u2028" not in text and "\x1b" not in text
    assert "\\u202e" in text
    raw = cli_flow(b"\xff\xfe not json \x1b[31m")
    text = show(raw).text
    assert "telewarden.body." in text and "\x1b" not in text


def test_uses_the_proxy_engine_and_works_without_one(engine):
    f = cli_flow(LEAKY_CLI)
    contentview.register(lambda: engine)
    try:
        text = show(f).text
        assert engine.digest(LEAKY_CLI["data"]["command"]) in text  # the proxy's key: digests match its trail
    finally:
        contentview.register()
    assert "hasura.cli.command-args" in show(f).text  # standalone: the bundled packs
    assert not engine.keep_values  # the view never switches the proxy's engine to keeping values


def test_in_a_real_mitmweb_on_a_recording(tmp_path, confdir):
    """mitmweb loads the demo recording and the addon (with the registration the addon makes);
    its own content API serves the view, chosen automatically, for HTTP flows and WebSocket frames."""
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    from conftest import EXAMPLES
    from support.harness import free_port

    script = tmp_path / "tw_with_view.py"
    script.write_text("from telewarden.proxy.addon import addons\n"
                      "from telewarden.proxy import contentview\n"
                      "contentview.register(lambda: addons[0].engine, lambda: addons[0].mode)\n")
    web, proxy = free_port(), free_port()
    mitmweb = Path(sys.executable).with_name("mitmweb")
    proc = subprocess.Popen([str(mitmweb), "--set", f"confdir={confdir}", "--set", "web_open_browser=false",
                             "--set", "web_password=tw-test", "--web-host", "127.0.0.1", "--web-port", str(web),
                             "--listen-host", "127.0.0.1", "--listen-port", str(proxy), "-s", str(script),
                             "--set", f"telewarden_audit={tmp_path / 'audit'}", "--set", "telewarden_reload_ms=0",
                             "--set", "telewarden_resolve_s=0", "-r", str(EXAMPLES / "flows" / "hasura-demo.mitm")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def get(path: str):
        req = urllib.request.Request(f"http://127.0.0.1:{web}{path}", headers={"Authorization": "Bearer tw-test"})
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as r:
            return json.loads(r.read())

    try:
        flows = None
        for _ in range(100):
            try:
                flows = get("/flows")
                if flows:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert flows, proc.stdout.read1(65536).decode() if proc.poll() is not None else "mitmweb did not answer"
        http_flow = next(f for f in flows if f["request"]["path"] == "/v1/http" and f["request"]["contentLength"])
        view = get(f"/flows/{http_flow['id']}/request/content/auto.json")
        assert view["view_name"] == "telewarden" and view["text"].startswith("# telewarden: ")
        assert "# --- request body as judged" in view["text"] and "# --- after scrub" in view["text"]
        ws_flow = next(f for f in flows if f["request"]["path"] == "/v1/ws" and f.get("websocket"))
        frames = get(f"/flows/{ws_flow['id']}/messages/content/auto.json")
        sent = [m for m in frames if m["from_client"]]
        assert sent and all(m["view_name"] == "telewarden" for m in sent)
        assert any("# findings (" in m["text"] for m in sent) or all("no findings" in m["text"] for m in sent)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_query_string_message_is_shown_as_the_object_the_engine_judges(view):
    from conftest import EXAMPLES

    with (EXAMPLES / "flows" / "nextjs-prisma-demo.mitm").open("rb") as fh:
        flows = [f for f in mio.FlowReader(fh).stream() if f.request.host == "checkpoint.prisma.io" and f.request.query]
    texts = [show(f, view_name="telewarden").text for f in flows]
    leaky = [t for t in texts if "prisma.command.args" in t]
    assert leaky and all("# --- query string as JSON (this endpoint's message)" in t for t in texts)
    lines = leaky[0].splitlines()
    at = lines.index(next(line for line in lines if line.strip().startswith("# >> [") and "prisma.command.args" in line))
    assert lines[at + 1].strip().startswith('"command": ')
    assert "# --- after scrub: what scrub mode forwards ---" in leaky[0]
