"""Test-only mitmproxy addon: send connections for the vendor's host to the local upstream.

No DNS is involved: the client still asks for telemetry.hasura.io (CONNECT target, Host, SNI);
only the proxy's outgoing connection goes to the upstream on 127.0.0.1 (TLS, or plain for port 80).
"""

import os

from mitmproxy import connection

TLS_PORT = int(os.environ["TELEWARDEN_TEST_UPSTREAM_PORT"])
PLAIN_PORT = int(os.environ["TELEWARDEN_TEST_UPSTREAM_PLAIN_PORT"])
NAMES = {"telemetry.hasura.io", "other.test", "127.0.0.1", "127.0.0.2"}


class Redirect:
    def server_connect(self, data) -> None:
        server: connection.Server = data.server
        if not server.address:
            return
        host, port = server.address
        if host.lower().rstrip(".") in NAMES and port not in (TLS_PORT, PLAIN_PORT):
            server.address = ("127.0.0.1", PLAIN_PORT if port == 80 else TLS_PORT)


addons = [Redirect()]
