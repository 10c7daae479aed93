"""The asyncio ICAP service: OPTIONS and REQMOD, one task per connection, every wait and size
bounded.

Per REQMOD: parse the encapsulated request head; a CONNECT or a destination no pack claims is
answered 204 after at most the preview (nothing more of the body is asked for); a claimed one has
its whole body read (up to max_body kept, the rest drained up to drain_limit), is judged and
recorded, then answered: 204 (compliant), 200 with the repaired request (scrubbed), or 200 with an
encapsulated 403 (blocked). Malformed ICAP gets an ICAP 4xx and the connection is closed; only an
ICAP error (never a verdict) depends on the proxy's `bypass=off` to fail closed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..engine.model import Decision, Mode
from . import protocol
from .exchange import Judge, candidate_hosts, split_target
from .protocol import Body, Closed, ICAPError

log = logging.getLogger("telewarden")


@dataclass(frozen=True, slots=True)
class ServerLimits:
    wire: protocol.Limits = field(default_factory=protocol.Limits)
    max_connections: int = 512  # concurrent; more are answered 503 and closed
    idle_timeout: float = 300.0  # seconds a persistent connection may wait for its next request
    request_timeout: float = 30.0  # seconds to receive one whole request (head and body)
    drain_limit: int = 64 << 20  # encapsulated body bytes read at most (beyond max_body: read and dropped)
    preview: int = 0  # Preview advertised in OPTIONS: 0 = decide on the head alone


class ICAPServer:
    def __init__(self, judge: Judge, *, service: str = "/telewarden", limits: ServerLimits | None = None,
                 istag: str | None = None) -> None:
        self.judge = judge
        self.service = "/" + service.strip("/")
        self.limits = limits or ServerLimits()
        self.istag = istag or make_istag(judge)
        self.connections = 0
        self._idle: set[asyncio.StreamWriter] = set()  # connections waiting for their next request
        self._closing = False
        self.served = 0
        self._server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 1344) -> asyncio.Server:
        self._server = await asyncio.start_server(self._client, host, port,
                                                  limit=max(self.limits.wire.max_http_head, self.limits.wire.max_icap_head) + 1024)
        return self._server

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            # Stop accepting; close connections waiting between requests now, and let each one
            # that is inside a request answer it first (the proxy holds persistent connections,
            # which would otherwise keep the service alive).
            self._closing = True
            self._server.close()
            for writer in list(self._idle):
                writer.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), self.limits.request_timeout + 2)
            except TimeoutError:
                pass

    # -- connections --------------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connections >= self.limits.max_connections:
            await self._send(writer, protocol.error(503, self.istag))
            await self._close(writer)
            return
        self.connections += 1
        try:
            while True:
                if self._closing:
                    return
                try:
                    self._idle.add(writer)
                    try:
                        async with asyncio.timeout(self.limits.idle_timeout):
                            req = await protocol.read_request(reader, self.limits.wire)
                    except TimeoutError:
                        return  # an idle persistent connection: closed without a word, as HTTP does
                    finally:
                        self._idle.discard(writer)
                    async with asyncio.timeout(self.limits.request_timeout):
                        out, keep = await self._serve(req, reader, writer)
                except Closed:
                    return
                except TimeoutError:
                    await self._send(writer, protocol.error(408, self.istag))
                    return
                except ICAPError as e:
                    log.info(f"telewarden icap: {e.status} {e}")
                    await self._send(writer, protocol.error(e.status, self.istag))
                    return
                except (ConnectionError, asyncio.IncompleteReadError):
                    return
                except Exception as e:  # noqa: BLE001 - never let a connection kill the service
                    log.error(f"telewarden icap: unexpected error ({type(e).__name__})", exc_info=True)
                    await self._send(writer, protocol.error(500, self.istag))
                    return
                self.served += 1
                if not await self._send(writer, out) or not keep:
                    return
        finally:
            self.connections -= 1
            await self._close(writer)

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, data: bytes) -> bool:
        try:
            writer.write(data)
            await writer.drain()
            return True
        except (ConnectionError, OSError):
            return False

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        try:
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 2)
        except (ConnectionError, OSError, TimeoutError):
            pass

    # -- requests -----------------------------------------------------------------------------

    async def _serve(self, req: protocol.Request, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> tuple[bytes, bool]:
        """(answer, keep the connection open)."""
        if req.service.rstrip("/") != self.service:
            raise ICAPError(404, "no such ICAP service")
        if req.method == "OPTIONS":
            if req.has_body:  # opt-body: not defined for requests by RFC 3507 we know of; refuse
                raise ICAPError(400, "OPTIONS with a body")
            return self.options(), True
        if req.method != "REQMOD":
            raise ICAPError(405, "only REQMOD is offered")
        malformed = None
        try:
            head = protocol.parse_http_head(req.http_head, self.limits.wire)
        except ICAPError as e:
            # Squid parsed this request already; if h11 is stricter, whose it is still decides:
            # another destination's passes, a claimed (or nameless) one is blocked as malformed.
            head = protocol.lenient_head(req.http_head, self.limits.wire)
            if head is None:
                raise
            malformed = str(e)
        target = split_target(head)
        hosts = candidate_hosts(head, target)
        if (hosts or malformed is None) and (head.method.upper() == "CONNECT" or not self.judge.claims(hosts)):
            return await self._pass(req, reader), True
        body = await self._read_body(req, reader, writer, keep=self.judge.engine.limits.max_body)
        if malformed is not None:
            verdict, ex = self.judge.malformed(head, target, hosts, malformed, len(body.data)), None
        else:
            verdict, ex = self.judge.judge(head, target, hosts, body.data, body.overflow)
        if body.overflow and verdict.decision is not Decision.BLOCKED and not req.allow_204:
            # audit mode forwards, but the whole body was not kept to echo it
            raise ICAPError(500, "body too large to echo without Allow: 204")
        return self.judge.answer(req, head, target, body.data, True, verdict, ex, self.istag), True

    async def _pass(self, req: protocol.Request, reader: asyncio.StreamReader) -> bytes:
        """No pack claims this destination: 204 after at most the preview."""
        hdrs = [("ISTag", self.istag)]
        if not req.has_body:
            if req.allow_204:
                return protocol.response(204, hdrs)
            return protocol.response(200, hdrs, [("req-hdr", req.http_head)], None)
        if req.preview is not None:
            body = Body()
            keep = 0 if req.allow_204 else req.preview
            ieof = await protocol.read_chunks(reader, self.limits.wire, body, keep=keep,
                                              drain_limit=min(req.preview, self.limits.wire.max_preview))
            if not ieof or req.allow_204:
                return protocol.response(204, hdrs)  # 204 is always allowed in answer to a preview
            return protocol.response(200, hdrs, [("req-hdr", req.http_head)], body.data)
        # No preview: the whole body is on its way and must be read before answering.
        body = Body()
        keep = 0 if req.allow_204 else self.limits.drain_limit
        await protocol.read_chunks(reader, self.limits.wire, body, keep=keep, drain_limit=self.limits.drain_limit)
        if req.allow_204:
            return protocol.response(204, hdrs)
        return protocol.response(200, hdrs, [("req-hdr", req.http_head)], body.data)

    async def _read_body(self, req: protocol.Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         keep: int) -> Body:
        body = Body()
        if not req.has_body:
            body.complete = True
            return body
        wire = self.limits.wire
        if req.preview is not None:
            ieof = await protocol.read_chunks(reader, wire, body, keep, min(req.preview, wire.max_preview))
            if ieof:
                body.complete = True
                return body
            writer.write(b"ICAP/1.0 100 Continue\r\n\r\n")
            await writer.drain()
        await protocol.read_chunks(reader, wire, body, keep, self.limits.drain_limit)
        body.complete = True
        return body

    def options(self) -> bytes:
        return protocol.response(200, [
            ("Methods", "REQMOD"),
            ("Service", f"telewarden/{__version__} telemetry policy ({self.judge.mode.value} mode)"),
            ("ISTag", self.istag),
            ("Max-Connections", str(self.limits.max_connections)),
            ("Options-TTL", "3600"),
            ("Allow", "204"),
            ("Preview", str(self.limits.preview)),
            ("Transfer-Preview", "*"),
        ])


def make_istag(judge: Judge) -> str:
    """Names the service's configuration: mode and the packs' files (a new pack, a new tag)."""
    h = hashlib.sha256(judge.mode.value.encode())
    for pack in judge.engine.packs:
        h.update(pack.id.encode())
        try:
            files = sorted(pack.files())
        except Exception:  # noqa: BLE001 - the tag names the configuration; it must never stop the service
            files = [Path(getattr(pack, "file", pack.id))]
        for f in files:
            try:
                h.update(f.read_bytes())
            except OSError:
                h.update(str(f).encode())
    return f'"tw-{h.hexdigest()[:24]}"'


__all__ = ["ICAPServer", "Mode", "ServerLimits"]
