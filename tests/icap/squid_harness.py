"""A real Squid (Debian's squid-openssl) with SSL bump in front of telewarden's ICAP services and
the harness's upstream, all on 127.0.0.1; and `telewarden icap` processes.

Squid reaches the upstream (which listens on random ports) through two `cache_peer ... originserver`
entries (TLS for https, plain for http) with `never_direct`, resolves names only through its own
hosts file, and asks no DNS server but 127.0.0.1. Each named http_port is routed to one ICAP
service (`adaptation_access ... myportname`), so one Squid serves every mode; the port named
`direct` has no ICAP service (for the benchmark's baseline).
"""

from __future__ import annotations

import datetime
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support.harness import BIN, HOST, free_port

CERTGEN_PATHS = ("/usr/lib/squid/security_file_certgen", "/usr/lib64/squid/security_file_certgen",
                 "/usr/libexec/squid/security_file_certgen")


def squid_binary() -> str | None:
    return shutil.which("squid") or next((p for p in ("/usr/sbin/squid",) if os.path.exists(p)), None)


def certgen() -> str | None:
    return next((p for p in CERTGEN_PATHS if os.path.exists(p)), None)


def missing_reason() -> str | None:
    """Why the Squid tests cannot run here, or None."""
    sq = squid_binary()
    if sq is None:
        return "squid is not installed (Debian: apt-get install squid-openssl)"
    out = subprocess.run([sq, "-v"], capture_output=True, text=True, timeout=10).stdout
    if "--with-openssl" not in out or "--enable-icap-client" not in out:
        return "this squid lacks OpenSSL or ICAP support (Debian: install squid-openssl, not squid)"
    if certgen() is None:
        return "squid's security_file_certgen helper was not found"
    if shutil.which("curl") is None:
        return "curl is not installed"
    return None


def make_ca(folder: Path) -> tuple[Path, Path]:
    """A signing CA for Squid's generated host certificates: (cert+key PEM for Squid, cert PEM for clients)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "telewarden test Squid CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    both, public = folder / "squid-ca.pem", folder / "squid-ca-cert.pem"
    both.write_bytes(pem + key_pem)
    public.write_bytes(pem)
    return both, public


def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen within {timeout}s:\n{_tail(log)}")


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-3000:]
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, wait: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


@dataclass
class IcapService:
    """A real `telewarden icap` process."""

    folder: Path
    mode: str = "scrub"
    extra: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def audit(self) -> Path:
        return self.folder / "audit"

    @property
    def log(self) -> Path:
        return self.folder / "icap.log"

    def start(self) -> IcapService:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        env = {**os.environ, "TELEWARDEN_AUDIT_KEY": "integration-test-key"}
        self._logf = self.log.open("ab")
        self.proc = subprocess.Popen(
            [str(BIN / "telewarden"), "icap", "--listen-port", str(self.port), "--mode", self.mode,
             "--audit", str(self.audit), *self.extra],
            stdout=self._logf, stderr=subprocess.STDOUT, env=env, cwd=self.folder, start_new_session=True)
        wait_port(self.port, self.proc, self.log, 30, "telewarden icap")
        return self

    def stop(self) -> None:
        _stop(self.proc)
        if self.proc is not None:
            self._logf.close()

    def records(self) -> list[dict]:
        import json

        path = self.audit / "audit.jsonl"
        if not path.exists():
            return []
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]

    def decisions(self) -> list[dict]:
        return [r for r in self.records() if "decision" in r]


class Squid:
    """A real Squid with SSL bump; `ports` maps a port name to the ICAP service it uses (or None)."""

    def __init__(self, upstream, services: dict[str, IcapService | None], *, extra_conf: str = "") -> None:
        self.upstream = upstream
        self.services = services
        self.extra_conf = extra_conf
        # Squid drops root to cache_effective_user (Debian: proxy): its folder must be that user's,
        # so it is a fresh temp folder rather than pytest's (mode 0700, root's).
        self.folder = Path(tempfile.mkdtemp(prefix="telewarden-squid-"))
        self.ports = {name: free_port() for name in services}
        self.proc: subprocess.Popen | None = None
        self.log = self.folder / "squid.out"

    def config(self) -> str:
        f = self.folder
        lines = []
        for name, port in self.ports.items():
            lines.append(f"http_port 127.0.0.1:{port} name={name} ssl-bump generate-host-certificates=on "
                         f"dynamic_cert_mem_cache_size=4MB tls-cert={self.ca_both}")
        lines += [
            f"sslcrtd_program {certgen()} -s {f / 'ssldb'} -M 4MB",
            "sslcrtd_children 3 startup=1 idle=1",
            "ssl_bump bump all",
            f"tls_outgoing_options cafile={self.upstream.cert}",
            # the upstream listens on random loopback ports: reach it as an origin-server peer
            f"cache_peer 127.0.0.1 parent {self.upstream.tls_port} 0 no-query no-digest no-netdb-exchange "
            f"originserver tls tls-cafile={self.upstream.cert} tls-domain={HOST} name=up_tls",
            f"cache_peer 127.0.0.1 parent {self.upstream.plain_port} 0 no-query no-digest no-netdb-exchange "
            f"originserver name=up_plain",
            "acl tlsreq proto HTTPS",
            "cache_peer_access up_tls allow tlsreq",
            "cache_peer_access up_tls deny all",
            "cache_peer_access up_plain deny tlsreq",
            "cache_peer_access up_plain allow all",
            "never_direct allow all",
            "http_access allow localhost",
            "http_access deny all",
            "http_upgrade_request_protocols WebSocket allow all",
            "icap_enable on",
            "icap_persistent_connections on",
            "icap_send_client_ip off",
        ]
        for name, svc in self.services.items():
            if svc is None:
                continue
            lines += [f"acl port_{name} myportname {name}",
                      f"icap_service svc_{name} reqmod_precache bypass=off icap://127.0.0.1:{svc.port}/telewarden",
                      f"adaptation_access svc_{name} allow port_{name}",
                      f"adaptation_access svc_{name} deny all"]
        lines += [
            "cache deny all", "cache_mem 0",
            f"hosts_file {f / 'hosts'}", "dns_nameservers 127.0.0.1",
            f"pid_filename {f / 'squid.pid'}",
            f"access_log stdio:{f / 'access.log'}", f"cache_log {f / 'cache.log'}", "cache_store_log none",
            f"coredump_dir {f}", "visible_hostname telewarden-test", "shutdown_lifetime 0 seconds",
            "pinger_enable off", "via off", "forwarded_for delete",
            "workers 1",
        ]
        return "\n".join(lines) + "\n" + self.extra_conf

    def start(self) -> Squid:
        f = self.folder
        self.ca_both, self.ca = make_ca(f)
        (f / "hosts").write_text(f"127.0.0.1 {HOST} other.test\n")
        subprocess.run([certgen(), "-c", "-s", str(f / "ssldb"), "-M", "4MB"], check=True, capture_output=True,
                       timeout=30)
        (f / "squid.conf").write_text(self.config())
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("proxy")
            except KeyError:
                user = None
            if user is not None:
                for p in [f, *f.rglob("*")]:
                    os.chown(p, user.pw_uid, user.pw_gid)
        self._logf = self.log.open("ab")
        self.proc = subprocess.Popen([squid_binary(), "-N", "-f", str(f / "squid.conf")], stdout=self._logf,
                                     stderr=subprocess.STDOUT, start_new_session=True, cwd=f)
        for port in self.ports.values():
            wait_port(port, self.proc, f / "cache.log", 30, "squid")
        return self

    def stop(self) -> None:
        _stop(self.proc)
        if self.proc is not None:
            self._logf.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def curl(self, body: bytes, *, port: str, url: str = f"https://{HOST}/v1/http", headers: list[str] | None = None,
             method: str = "POST", extra: list[str] | None = None, timeout: float = 20) -> tuple[int, bytes, dict]:
        """curl through Squid's port `port`; returns (status, response body, response headers)."""
        cmd = ["curl", "-sS", "--noproxy", "", "-x", f"http://127.0.0.1:{self.ports[port]}", "--cacert", str(self.ca),
               "-X", method, "--max-time", str(timeout), "-D", "-", "-o", "-"]
        given = [a.split(":", 1)[0].lower() for a in [*(headers or []), *(extra or [])] if ":" in a]
        for default in ("Content-Type: application/json", "User-Agent: Go-http-client/1.1"):
            if default.split(":", 1)[0].lower() not in given:
                cmd += ["-H", default]
        for h in headers or []:
            cmd += ["-H", h]
        cmd += extra or []
        if body:
            cmd += ["--data-binary", "@-"]
        cmd.append(url)
        out = subprocess.run(cmd, input=body, capture_output=True, timeout=timeout + 10)
        if out.returncode != 0:
            raise RuntimeError(f"curl failed ({out.returncode}): {out.stderr.decode()}")
        raw = out.stdout
        # -D - writes the response head(s) first (a 100 Continue, a CONNECT 200, then the answer)
        status, headers_out = 0, {}
        while raw.startswith(b"HTTP/"):
            head, _, raw = raw.partition(b"\r\n\r\n")
            first, *rest = head.split(b"\r\n")
            status = int(first.split()[1])
            headers_out = {k.strip().lower(): v.strip() for k, _, v in (x.decode("latin-1").partition(":") for x in rest)}
        return status, raw, headers_out

    def cache_log(self) -> str:
        return _tail(self.folder / "cache.log")
