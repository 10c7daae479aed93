"""Build the bundled demo recordings from examples/payloads and examples/violations.json.

    python examples/make_flows.py   # writes examples/flows/hasura-demo.mitm and .har

The demo holds, as a Hasura deployment would send them: server and CLI POSTs to
https://telemetry.hasura.io/v1/http, one console WebSocket on /v1/ws with its frames, and a few
unrelated requests that telewarden must pass through untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

from mitmproxy import http, io
from mitmproxy.addons.savehar import SaveHar
from mitmproxy.test import tflow

HERE = Path(__file__).parent
T0 = 1_764_230_400.0  # 2025-11-27T08:00:00Z: fixed, so the files are reproducible


def post(body: bytes, ua: str, t: float) -> http.HTTPFlow:
    flow = tflow.tflow(resp=True)
    flow.request = http.Request.make("POST", "https://telemetry.hasura.io/v1/http", body,
                                     {"Content-Type": "application/json", "User-Agent": ua})
    flow.request.timestamp_start = flow.request.timestamp_end = t
    flow.response = http.Response.make(200, b"", {"Content-Length": "0"})
    flow.client_conn.sni = "telemetry.hasura.io"
    return flow


def console_socket(frames: list[bytes], t: float) -> http.HTTPFlow:
    flow = tflow.twebsocketflow(messages=False)
    flow.request = http.Request.make("GET", "https://telemetry.hasura.io/v1/ws", b"",
                                     {"Upgrade": "websocket", "Connection": "Upgrade",
                                      "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                      "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36"})
    flow.request.timestamp_start = t
    flow.client_conn.sni = "telemetry.hasura.io"
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
            flows.append(post(body, "Go-http-client/1.1" if name.startswith("cli") else "hasura-graphql-engine/v2.48.10", t))
    for case in violations:
        t += 1
        body = json.dumps(case["body"], separators=(",", ":")).encode()
        if case["transport"] == "websocket":
            frames.append(body)
        else:
            flows.append(post(body, "Go-http-client/1.1", t))
    flows.append(console_socket(frames, t + 1))
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
