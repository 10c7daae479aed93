"""A minimal upstream for the benchmarks: answers 200 to everything, plain and TLS, on 127.0.0.1.

    python bench/upstream.py PLAIN_PORT TLS_PORT CERT KEY
"""

import asyncio
import ssl
import sys

from aiohttp import web


async def ok(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="ok")


async def main(plain: int, tls: int, cert: str, key: str) -> None:
    app = web.Application(client_max_size=64 << 20)
    app.router.add_route("*", "/{tail:.*}", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    await web.TCPSite(runner, "127.0.0.1", plain).start()
    await web.TCPSite(runner, "127.0.0.1", tls, ssl_context=ctx).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]))
