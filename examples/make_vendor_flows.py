"""Build the Next.js and Prisma demo recording from examples/payloads/{nextjs,prisma} and
examples/violations-{nextjs,prisma}.json.

    python examples/make_vendor_flows.py   # writes examples/flows/nextjs-prisma-demo.mitm and .har

As the real clients send them (tests/test_real_clients.py): Next.js POSTs to
https://telemetry.nextjs.org/api/v1/record with Node fetch's headers, Prisma's checkpoint child GETs
https://checkpoint.prisma.io/v1/check/<product>?<query> with node-fetch's; genuine messages of every
generation first, then each documented violation.
"""

from __future__ import annotations

import json
from pathlib import Path

from mitmproxy import http, io
from mitmproxy.addons.savehar import SaveHar
from mitmproxy.test import tflow

HERE = Path(__file__).parent
T0 = 1_764_234_000.0  # 2025-11-27T09:00:00Z: fixed, so the files are reproducible
NEXT_HEADERS = [("Connection", "keep-alive"), ("Content-Type", "application/json"), ("Accept", "*/*"),
                ("Accept-Language", "*"), ("Sec-Fetch-Mode", "cors"), ("User-Agent", "node"),
                ("Accept-Encoding", "br, gzip, deflate")]
PRISMA_HEADERS = [("Accept", "application/json"), ("User-Agent", "prisma/js-checkpoint"),
                  ("Accept-Encoding", "gzip,deflate"), ("Connection", "keep-alive")]


def request(method: str, host: str, target: str, body: bytes, headers, t: float) -> http.HTTPFlow:
    flow = tflow.tflow(resp=True)
    flow.request = http.Request.make(method, f"https://{host}{target}", body,
                                     http.Headers([(k.encode(), v.encode()) for k, v in headers]))
    flow.request.timestamp_start = flow.request.timestamp_end = t
    flow.response = http.Response.make(200, b"{}", {"Content-Type": "application/json"})
    flow.client_conn.sni = flow.server_conn.sni = host
    flow.server_conn.address = (host, 443)
    return flow


def main() -> None:
    flows, t = [], T0
    nextjs = [p.read_bytes().strip() for p in sorted((HERE / "payloads" / "nextjs").glob("*.json"))]
    nextjs += [json.dumps(c["body"], separators=(",", ":")).encode()
               for c in json.loads((HERE / "violations-nextjs.json").read_text())]
    for body in nextjs:
        t += 1
        flows.append(request("POST", "telemetry.nextjs.org", "/api/v1/record", body, NEXT_HEADERS, t))
    prisma = [p.read_text().strip() for p in sorted((HERE / "payloads" / "prisma").glob("*.query"))]
    prisma += [c["url"].split("checkpoint.prisma.io", 1)[1] + "?" + c["query"]
               for c in json.loads((HERE / "violations-prisma.json").read_text())]
    for target in prisma:
        t += 1
        flows.append(request("GET", "checkpoint.prisma.io", target, b"", PRISMA_HEADERS, t))
    out = HERE / "flows"
    with (out / "nextjs-prisma-demo.mitm").open("wb") as f:
        writer = io.FlowWriter(f)
        for fl in flows:
            writer.add(fl)
    (out / "nextjs-prisma-demo.har").write_text(json.dumps(SaveHar().make_har(flows), indent=1) + "\n")
    print(f"wrote {len(flows)} flows to {out}")


if __name__ == "__main__":
    main()
