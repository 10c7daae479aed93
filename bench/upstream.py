"""A minimal upstream for the benchmarks: answers 200 to everything, plain and TLS, on 127.0.0.1.

    python bench/upstream.py PLAIN_PORT TLS_PORT CERT KEY [--judge SUMMARY.json]

With --judge it inspects every body it receives with telewarden's engine (block mode) and, on
SIGTERM, writes how many it received and how many broke a rule: the soak's "violations forwarded".
"""

import asyncio
import json
import signal
import ssl
import sys

from aiohttp import web

COUNTS = {"received": 0, "violating": 0, "violating_rules": {}}
ENGINE = None


COUNTS["frames"] = 0


def judge(body: bytes, websocket: bool) -> None:
    from telewarden.engine.model import Exchange, Mode, Transport

    t = Transport.WEBSOCKET if websocket else Transport.HTTP
    v = ENGINE.inspect(Exchange(t, "WS" if websocket else "POST", ("telemetry.hasura.io",), 443,
                                "/v1/ws" if websocket else "/v1/http", "", (), body), Mode.BLOCK)
    if v.findings:
        COUNTS["violating"] += 1
        for r in v.rule_ids:
            COUNTS["violating_rules"][r] = COUNTS["violating_rules"].get(r, 0) + 1


async def ok(request: web.Request) -> web.Response:
    body = await request.read()
    if ENGINE is not None and request.path.startswith("/v1/"):
        COUNTS["received"] += 1
        judge(body, websocket=False)
    return web.Response(text="ok")


async def ws(request: web.Request) -> web.WebSocketResponse:
    sock = web.WebSocketResponse()
    await sock.prepare(request)
    async for msg in sock:
        if ENGINE is not None:
            COUNTS["frames"] += 1
            judge(msg.data.encode() if isinstance(msg.data, str) else msg.data, websocket=True)
    return sock


async def main(plain: int, tls: int, cert: str, key: str, summary: str | None) -> None:
    global ENGINE
    if summary:
        from telewarden.engine.judge import Engine
        from telewarden.engine.packs import load_packs

        ENGINE = Engine(load_packs([]), digest_key=b"soak")
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    else:
        stop = asyncio.Event()
    app = web.Application(client_max_size=64 << 20)
    app.router.add_route("GET", "/v1/ws", ws)
    app.router.add_route("*", "/{tail:.*}", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    await web.TCPSite(runner, "127.0.0.1", plain).start()
    await web.TCPSite(runner, "127.0.0.1", tls, ssl_context=ctx).start()
    print("ready", flush=True)
    await stop.wait()
    if summary:
        with open(summary, "w") as f:
            json.dump(COUNTS, f)


if __name__ == "__main__":
    summary_file = sys.argv[sys.argv.index("--judge") + 1] if "--judge" in sys.argv else None
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], summary_file))
