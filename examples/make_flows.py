"""Build the bundled demo recordings from examples/payloads and examples/violations.json.

    python examples/make_flows.py   # writes examples/flows/hasura-demo.mitm and .har

The demo holds, as a Hasura deployment would send them: server and CLI POSTs to
https://telemetry.hasura.io/v1/http with the headers each sender really sets, one console WebSocket
on /v1/ws with its frames (handshake of Chrome on the CLI's console, http://localhost:9695), the
header violations of examples/headers.json (one POST or handshake each), and a few unrelated
requests that telewarden must pass through untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

from mitmproxy import http, io
from mitmproxy.addons.savehar import SaveHar
from mitmproxy.test import tflow

HERE = Path(__file__).parent
T0 = 1_764_230_400.0  # 2025-11-27T08:00:00Z: fixed, so the files are reproducible


HEADERS = json.loads((HERE / "headers.json").read_text())
SENDERS = {g["name"]: [tuple(h) for h in g["headers"]] for g in HEADERS["genuine"]}


def without(headers: list[tuple[str, str]], *names: str) -> http.Headers:
    drop = {n.lower() for n in (*names, "host", "content-length")}  # mitmproxy sets these itself
    return http.Headers([(k.encode(), v.encode()) for k, v in headers if k.lower() not in drop])


def post(body: bytes, headers: list[tuple[str, str]], t: float) -> http.HTTPFlow:
    flow = tflow.tflow(resp=True)
    flow.request = http.Request.make("POST", "https://telemetry.hasura.io/v1/http", body, without(headers))
    flow.request.timestamp_start = flow.request.timestamp_end = t
    flow.response = http.Response.make(200, b"", {"Content-Length": "0"})
    flow.client_conn.sni = flow.server_conn.sni = "telemetry.hasura.io"
    flow.server_conn.address = ("telemetry.hasura.io", 443)
    return flow


def console_socket(frames: list[bytes], t: float, headers: list[tuple[str, str]] | None = None) -> http.HTTPFlow:
    flow = tflow.twebsocketflow(messages=False)
    flow.request = http.Request.make("GET", "https://telemetry.hasura.io/v1/ws", b"",
                                     without(headers or SENDERS["console-chrome-cli"]))
    flow.request.timestamp_start = t
    flow.client_conn.sni = flow.server_conn.sni = "telemetry.hasura.io"
    flow.server_conn.address = ("telemetry.hasura.io", 443)
    from mitmproxy.websocket import WebSocketMessage
    from wsproto.frame_protocol import Opcode

    flow.websocket.messages = [WebSocketMessage(Opcode.TEXT, True, f, t + i) for i, f in enumerate(frames)]
    return flow


def main() -> None:
    payloads = {p.stem: p.read_bytes().strip() for p in sorted((HERE / "payloads").glob("*.json"))}
    violations = json.loads((HERE / "violations.json").read_text())
    flows: list[http.HTTPFlow] = []
    t = T0
    frames = []
    for name, body in payloads.items():
        t += 1
        if name.startswith("console"):
            frames.append(body)
        else:
            flows.append(post(body, SENDERS["cli-http1" if name.startswith("cli") else "server-v2.48"], t))
    for case in violations:
        t += 1
        body = json.dumps(case["body"], separators=(",", ":")).encode()
        if case["transport"] == "websocket":
            frames.append(body)
        else:
            cli = str(case["body"].get("topic", "")).startswith("cli")
            flows.append(post(body, SENDERS["cli-http1" if cli else "server-v2.48"], t))
    flows.append(console_socket(frames, t + 1))
    for case in HEADERS["violations"]:  # free text in a header: a genuine message, one bad header
        t += 1
        headers = [h for h in SENDERS[case["base"]] if h[0].lower() != case["header"].lower()]
        headers.append((case["header"], case["value"]))
        if case["transport"] == "websocket":
            flows.append(console_socket([payloads["console-v2.48-click"]], t + 1, headers))
        else:
            flows.append(post(payloads["cli-v2.48-no-error"], headers, t))
    other = tflow.tflow(resp=True)  # unrelated traffic: passes through
    other.request = http.Request.make("GET", "https://example.org/index.html")
    flows.append(other)
    out = HERE / "flows"
    out.mkdir(exist_ok=True)
    with (out / "hasura-demo.mitm").open("wb") as f:
        writer = io.FlowWriter(f)
        for fl in flows:
            writer.add(fl)
    har = SaveHar().make_har([f for f in flows if f.websocket is None])
    (out / "hasura-demo.har").write_text(json.dumps(har, indent=1) + "\n")
    print(f"wrote {len(flows)} flows ({len(frames)} console frames) to {out}")


if __name__ == "__main__":
    main()
