"""Test-only mitmproxy addon: send connections for the vendor's host to the local upstream.

No DNS is involved: the client still asks for telemetry.hasura.io (CONNECT target, Host, SNI);
only the proxy's outgoing connection goes to the upstream on 127.0.0.1 (TLS, or plain for port 80).
HTTP requests are redirected per request (the Host header and SNI keep the vendor's name), so
that mitmproxy reuses the upstream connection as it would for the real host; connections that
never become HTTP (raw relays) are redirected when they connect.
"""

import os

from mitmproxy import connection, http

TLS_PORT = int(os.environ["TELEWARDEN_TEST_UPSTREAM_PORT"])
PLAIN_PORT = int(os.environ["TELEWARDEN_TEST_UPSTREAM_PLAIN_PORT"])
NAMES = {"telemetry.hasura.io", "other.test", "127.0.0.1", "127.0.0.2", "telemetry.nextjs.org", "checkpoint.prisma.io"}


def _target(host: str, port: int) -> tuple[str, int] | None:
    if host.lower().rstrip(".") in NAMES and port not in (TLS_PORT, PLAIN_PORT):
        return "127.0.0.1", PLAIN_PORT if port == 80 else TLS_PORT
    return None


class Redirect:
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        target = _target(flow.request.host, flow.request.port)
        if target is not None:  # data.host: the Host header keeps the vendor's name
            flow.request.data.host, flow.request.data.port = target

    def server_connect(self, data) -> None:
        server: connection.Server = data.server
        if server.address and (target := _target(*server.address[:2])) is not None:
            server.address = target


addons = [Redirect()]
