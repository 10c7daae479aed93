"""Real clients through a real `telewarden run` in reverse mode (issue 14): a real `next build` of a
tiny app and real `prisma` commands, installed from npm (tests/real_clients/setup.sh, cached outside
the repo). Neither honours proxy variables, so name resolution points the vendor's host at the proxy
inside the Node process only (tests/real_clients/preload.js through NODE_OPTIONS, inherited by every
child they spawn), and NODE_EXTRA_CA_CERTS trusts the proxy's CA. The proxy forwards to a local
upstream posing as the vendor (support/redirect_addon.py). Checked: what reached the upstream, what
the trail says, and that each opt-out sends nothing (`telewarden check --expect-no-telemetry`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from conftest import ROOT

# Registered here, before first use (pytest.mark knows the running config): a test module's own
# pytest_configure would never be called, and this module needs no conftest of its own.
if getattr(pytest.mark, "_config", None) is not None:
    pytest.mark._config.addinivalue_line("markers", "realclient: runs a real vendor client (Node: Next.js, Prisma CLI)")
pytestmark = [pytest.mark.proxy, pytest.mark.realclient]

HERE = Path(__file__).resolve().parent
PRELOAD = HERE / "real_clients" / "preload.js"
SETUP = HERE / "real_clients" / "setup.sh"
CACHE = Path(os.environ.get("TELEWARDEN_REALCLIENTS", Path.home() / ".cache" / "telewarden-realclients"))
NEXT_HOST, PRISMA_HOST = "telemetry.nextjs.org", "checkpoint.prisma.io"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def clients() -> Path:
    """The npm installs, made once (setup.sh) and reused; a clear skip without node and npm."""
    missing = [t for t in ("node", "npm") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"real-client tests need {' and '.join(missing)} (apt-get install nodejs npm)")
    def installed() -> bool:
        return (CACHE / "next" / "node_modules" / "next").is_dir() and \
            (CACHE / "prisma" / "node_modules" / "prisma").is_dir()

    if not installed():
        out = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=900,
                             env={**os.environ, "TELEWARDEN_REALCLIENTS": str(CACHE)})
        if out.returncode != 0 or not installed():
            pytest.skip(f"npm install of the real clients into {CACHE} failed (no registry?): {out.stderr[-500:]}")
    return CACHE


def node_env(proxy, host: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEXT_TELEMETRY", "CHECKPOINT_", "PRISMA_TELEMETRY"))}
    env.pop("HTTPS_PROXY", None), env.pop("HTTP_PROXY", None)
    env.update({"NODE_OPTIONS": f"--require {PRELOAD}", "NODE_EXTRA_CA_CERTS": str(proxy.ca),
                "TELEWARDEN_PRELOAD_HOSTS": f"{host}=127.0.0.1:{proxy.port}", **extra})
    return env


def reverse_proxy(start_proxy, host: str, mode: str = "scrub", extra: list[str] | None = None):
    # the upstream's test certificate names telemetry.hasura.io: the proxy's own upstream leg (to
    # 127.0.0.1 only) skips verification; the client's leg is verified against the proxy's CA
    return start_proxy(mode, ["--mode", f"reverse:https://{host}/", "--set", "ssl_insecure=true", *(extra or [])])


NEXT_INSTALLS = {"15.5.29": "next", "16.0.3": "next16"}  # version -> folder in the cache (setup.sh)


def tiny_app(folder: Path, clients: Path, deps: dict[str, str] | None = None, version: str = "15.5.29") -> Path:
    app = folder / "app"
    (app / "app").mkdir(parents=True)
    pkg = {"name": "tiny", "version": "1.0.0", "private": True,  # no "type": "commonjs": next build breaks on it
           "dependencies": {"next": version, "react": "19", "react-dom": "19", **(deps or {})}}
    (app / "package.json").write_text(json.dumps(pkg))
    modules = clients / NEXT_INSTALLS[version] / "node_modules"
    if not (modules / "next").is_dir():
        pytest.skip(f"next@{version} is not installed in {clients} (tests/real_clients/setup.sh)")
    # a hard-linked copy (fast, same file system), not a symlink: Turbopack (16.x builds) refuses a
    # node_modules that points out of the project; a plain copy where links cannot be made
    if subprocess.run(["cp", "-al", str(modules), str(app / "node_modules")], capture_output=True).returncode != 0:
        shutil.rmtree(app / "node_modules", ignore_errors=True)
        shutil.copytree(modules, app / "node_modules", symlinks=True)
    (app / "app" / "layout.js").write_text(
        "export default function RootLayout({ children }) { return <html lang=\"en\"><body>{children}</body></html> }\n")
    (app / "app" / "page.js").write_text("export default function Page() { return <p>hello</p> }\n")
    return app


def next_build(app: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    out = subprocess.run(["node", str(app / "node_modules" / "next" / "dist" / "bin" / "next"), "build"], cwd=app,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out


SCHEMA = """datasource db {
  provider = "sqlite"
  url      = "file:./dev.db"
}

generator client {
  provider = "prisma-client-js"
}

model User {
  id    Int    @id @default(autoincrement())
  email String @unique
}
"""


def prisma(cwd: Path, clients: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """A real prisma command in a project with a schema (6.19 computes the project hash from the
    schema's path and sends nothing without one)."""
    (cwd / "prisma").mkdir(exist_ok=True)
    (cwd / "prisma" / "schema.prisma").write_text(SCHEMA)
    return subprocess.run(["node", str(clients / "prisma" / "node_modules" / "prisma" / "build" / "index.js"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def settle(upstream, proxy, count: int, timeout: float = 60.0) -> None:
    """Wait until the trail holds `count` decisions (a detached child may send after its parent exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(proxy.decisions()) < count:
        time.sleep(0.2)
    time.sleep(0.5)


def dump(received, name: str) -> None:
    """TELEWARDEN_REALCLIENTS_DUMP=DIR: keep what reached the upstream (the examples are made from it)."""
    folder = os.environ.get("TELEWARDEN_REALCLIENTS_DUMP")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{name}.json").write_text(json.dumps(
            [{"method": r.method, "path": r.path, "headers": r.headers, "body": r.body.decode()} for r in received], indent=1))


# -- Next.js ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", sorted(NEXT_INSTALLS))
def test_next_build_clean_default_app_passes_without_a_finding(clients, start_proxy, upstream, tmp_path, version):
    proxy = reverse_proxy(start_proxy, NEXT_HOST)
    upstream.clear()
    app = tiny_app(tmp_path, clients, version=version)
    next_build(app, node_env(proxy, NEXT_HOST))
    settle(upstream, proxy, 1)
    recs = proxy.decisions()
    got = [r for r in upstream.requests() if r.path == "/api/v1/record"]
    assert recs and len(got) == len(recs), (len(got), recs)
    assert all(r["decision"] == "forwarded" and r["pack"] == "nextjs" and r["kind"] == "record" for r in recs), recs
    assert not any(r.get("findings") for r in recs), [r.get("findings") for r in recs]
    events = [e for r in got for e in r.json()["events"]]
    names = {e["eventName"] for e in events}
    assert {"NEXT_CLI_SESSION_STARTED", "NEXT_PACKAGE_DETECTED", "NEXT_BUILD_COMPLETED", "NEXT_BUILD_OPTIMIZED",
            "NEXT_BUILD_FEATURE_USAGE"} <= names, names
    dump(got, f"nextjs-{version}-build")
    print(f"next@{version} build: {len(recs)} messages, {len(events)} events judged, all forwarded unchanged")


def test_next_build_leaking_dependencies_is_scrubbed_event_by_event(clients, start_proxy, upstream, tmp_path):
    proxy = reverse_proxy(start_proxy, NEXT_HOST)
    upstream.clear()
    app = tiny_app(tmp_path, clients, {"@acme/billing-core": "file:../../packages/billing",
                                       "left-pad": "git+ssh://git@github.com/acme/private.git#main"})
    next_build(app, node_env(proxy, NEXT_HOST))
    settle(upstream, proxy, 1)
    recs = proxy.decisions()
    scrubbed = [r for r in recs if r["decision"] == "scrubbed"]
    assert len(scrubbed) == 1 and all(r["decision"] == "forwarded" for r in recs if r not in scrubbed), recs
    found = {(f["rule"], f["pointer"].rsplit("/", 3)[0] + "/*/" + "/".join(f["pointer"].rsplit("/", 2)[1:]))
             for f in scrubbed[0]["findings"]}
    assert ("nextjs.package.private-name", "/events/*/fields/packageName") in found
    assert ("nextjs.package.version-spec", "/events/*/fields/packageVersion") in found
    sent = [e["fields"] for r in upstream.requests() for e in r.json()["events"] if e["eventName"] == "NEXT_PACKAGE_DETECTED"]
    assert {"packageName": "@private/package", "packageVersion": "unknown"} in sent
    assert {"packageName": "left-pad", "packageVersion": "unknown"} in sent
    assert {"packageName": "next", "packageVersion": "15.5.29"} in sent  # the others untouched
    blob = b"".join(r.body for r in upstream.requests())
    assert b"acme" not in blob and b"billing" not in blob and b"git+ssh" not in blob


def test_next_telemetry_disabled_sends_nothing(clients, start_proxy, upstream, tmp_path):
    flows = tmp_path / "flows.mitm"
    proxy = reverse_proxy(start_proxy, NEXT_HOST, "audit", ["-w", str(flows)])
    upstream.clear()
    app = tiny_app(tmp_path, clients)
    next_build(app, node_env(proxy, NEXT_HOST, NEXT_TELEMETRY_DISABLED="1"))
    time.sleep(2)
    proxy.stop()
    assert upstream.requests() == [] and proxy.decisions() == []
    out = subprocess.run([str(BIN / "telewarden"), "check", "--expect-no-telemetry", "nextjs", str(flows)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    # the same gate fails on a recording that holds Next.js telemetry
    demo = ROOT / "examples" / "flows" / "nextjs-prisma-demo.mitm"
    out = subprocess.run([str(BIN / "telewarden"), "check", "--expect-no-telemetry", "nextjs", str(demo)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr


# -- Prisma ----------------------------------------------------------------------------------------

def checkpoints(upstream) -> list[dict]:
    return [parse_qs(urlsplit(r.path).query, keep_blank_values=True) for r in upstream.requests()
            if r.path.startswith("/v1/check/")]


# `prisma --version` sends nothing (CLI.ts returns before the checkpoint), and most commands first
# download the engines (no network here): `prisma debug` needs none and sends its checkpoint.
def test_prisma_debug_clean_passes_without_a_finding(clients, start_proxy, upstream, tmp_path):
    proxy = reverse_proxy(start_proxy, PRISMA_HOST)
    upstream.clear()
    out = prisma(tmp_path, clients, ["debug"], node_env(proxy, PRISMA_HOST))
    assert out.returncode == 0, out.stderr[-2000:]
    settle(upstream, proxy, 1)
    recs = proxy.decisions()
    assert len(recs) == 1 and recs[0]["decision"] == "forwarded" and recs[0]["kind"] == "cli", recs
    assert not recs[0].get("findings")
    [query] = checkpoints(upstream)
    assert query["command"] == ["debug"] and query["signature"][0]
    dump(upstream.requests(), "prisma-debug")
    print(f"prisma debug: 1 message judged, forwarded unchanged: {upstream.requests()[0].path[:80]}...")


def test_prisma_command_values_are_scrubbed_from_the_query(clients, start_proxy, upstream, tmp_path):
    proxy = reverse_proxy(start_proxy, PRISMA_HOST)
    upstream.clear()
    # positional arguments are never redacted by Prisma (wire-format page #2): they go out verbatim
    prisma(tmp_path, clients, ["debug", "add_customer_ssn"],
           node_env(proxy, PRISMA_HOST, PRISMA_TELEMETRY_INFORMATION="team=payments, host=db01.acme.internal"))
    settle(upstream, proxy, 1)
    recs = proxy.decisions()
    assert len(recs) == 1 and recs[0]["decision"] == "scrubbed", recs
    assert {f["rule"] for f in recs[0]["findings"]} == {"prisma.command.args", "prisma.information.free-text"}
    [query] = checkpoints(upstream)
    assert query["command"] == ["debug"] and query["information"] == [""]
    assert b"ssn" not in upstream.requests()[0].path.encode() and "acme" not in upstream.requests()[0].path


def test_prisma_checkpoint_disable_sends_nothing(clients, start_proxy, upstream, tmp_path):
    flows = tmp_path / "flows.mitm"
    proxy = reverse_proxy(start_proxy, PRISMA_HOST, "audit", ["-w", str(flows)])
    upstream.clear()
    out = prisma(tmp_path, clients, ["debug"], node_env(proxy, PRISMA_HOST, CHECKPOINT_DISABLE="1"))
    assert out.returncode == 0, out.stderr[-2000:]
    time.sleep(3)  # the detached child would have sent by now
    proxy.stop()
    assert upstream.requests() == [] and proxy.decisions() == []
    out = subprocess.run([str(BIN / "telewarden"), "check", "--expect-no-telemetry", "prisma", str(flows)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    demo = ROOT / "examples" / "flows" / "nextjs-prisma-demo.mitm"
    out = subprocess.run([str(BIN / "telewarden"), "check", "--expect-no-telemetry", "prisma", str(demo)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr


def test_prisma_through_sink_is_answered_in_the_vendors_shape(clients, start_proxy, upstream, tmp_path):
    """--sink: judged and recorded, answered by telewarden with the pack's `respond:`, never sent."""
    proxy = reverse_proxy(start_proxy, PRISMA_HOST, "scrub", ["--sink"])
    upstream.clear()
    out = prisma(tmp_path, clients, ["debug"], node_env(proxy, PRISMA_HOST))
    assert out.returncode == 0, out.stderr[-2000:]
    settle(upstream, proxy, 1)
    recs = proxy.decisions()
    assert len(recs) == 1 and recs[0]["decision"] == "forwarded" and recs[0]["sunk"] is True, recs
    assert upstream.requests() == []


def test_one_proxy_two_vendors_the_readme_recipe(clients, start_proxy, upstream, tmp_path):
    """The README's recipe: one `telewarden run`, one reverse listener per vendor; real Node fetch
    (undici, as Next.js sends) and the real Prisma checkpoint, each resolved to its own listener."""
    from support.harness import free_port

    second = free_port()
    proxy = start_proxy("scrub", ["--mode", f"reverse:https://{NEXT_HOST}/", "--mode",
                                  f"reverse:https://{PRISMA_HOST}/@127.0.0.1:{second}", "--set", "ssl_insecure=true"])
    upstream.clear()
    env = node_env(proxy, NEXT_HOST)
    env["TELEWARDEN_PRELOAD_HOSTS"] += f",{PRISMA_HOST}=127.0.0.1:{second}"
    body = (ROOT / "examples" / "payloads" / "nextjs" / "nextjs-15.5-build-type-check.json").read_text()
    post = ("fetch('https://telemetry.nextjs.org/api/v1/record', {method: 'POST', body: process.argv[1], "
            "headers: {'content-type': 'application/json'}}).then(r => process.exit(r.ok ? 0 : 1))")
    out = subprocess.run(["node", "-e", post, body], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert prisma(tmp_path, clients, ["debug"], env).returncode == 0
    settle(upstream, proxy, 2)
    recs = proxy.decisions()
    assert sorted((r["pack"], r["decision"]) for r in recs) == [("nextjs", "forwarded"), ("prisma", "forwarded")], recs
    assert not any(r.get("findings") for r in recs)
    assert sorted(r.path.split("?")[0] for r in upstream.requests()) == ["/api/v1/record", "/v1/check/prisma"]
