"""audit.log rendered after forwarding (issue 12): the JSONL record first, the human view later,
and a human view that lags behind its chain (a crash between the two) regenerated on opening."""

from __future__ import annotations

import io

import pytest

from conftest import VIOLATIONS, exchange
from telewarden.audit import trail as audit, render
from telewarden.audit.trail import AuditTrail, verify
from telewarden.engine.model import Mode


@pytest.fixture(autouse=True)
def key_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("config")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.delenv("TELEWARDEN_AUDIT_KEY", raising=False)
    return home


def write(trail: AuditTrail, engine, n: int) -> None:
    for case in VIOLATIONS[:n]:
        ex = exchange(case["body"], case["transport"])
        trail.write(render.record(engine.inspect(ex, Mode.SCRUB), ex))


def rendered(folder) -> str:
    out = io.StringIO()
    assert audit.render_trail(folder, out)[0] == 0
    return out.getvalue()


def test_deferred_records_are_in_the_chain_at_once_and_in_the_human_view_after_a_flush(tmp_path, engine):
    trail = AuditTrail(tmp_path)
    trail.defer_human = True
    write(trail, engine, 4)
    assert verify(tmp_path)[1].startswith("intact: 4 records")
    assert (tmp_path / "audit.log").read_text() == "" and trail.pending_human() == 4
    trail.flush_human()
    assert (tmp_path / "audit.log").read_text() == rendered(tmp_path)
    write(trail, engine, 2)
    trail.close()  # closing renders what is pending
    assert (tmp_path / "audit.log").read_text() == rendered(tmp_path)


def test_a_human_view_that_lags_behind_the_chain_is_regenerated_on_opening(tmp_path, engine):
    trail = AuditTrail(tmp_path)
    trail.defer_human = True
    write(trail, engine, 3)
    trail.flush_human()
    write(trail, engine, 2)  # chained, never rendered: the process "dies" here
    trail._pending.clear()
    trail.close()
    assert (tmp_path / "audit.log").read_text() != rendered(tmp_path)
    AuditTrail(tmp_path).close()
    assert (tmp_path / "audit.log").read_text() == rendered(tmp_path)
    assert (tmp_path / "audit.log").read_text().count("\n\n") == 5


def test_an_in_step_human_view_is_left_alone(tmp_path, engine):
    trail = AuditTrail(tmp_path)
    write(trail, engine, 3)
    trail.close()
    before = (tmp_path / "audit.log").stat()
    AuditTrail(tmp_path).close()
    after = (tmp_path / "audit.log").stat()
    assert (before.st_ino, before.st_size) == (after.st_ino, after.st_size)


def test_rotation_renders_the_pending_records_into_the_rotated_view(tmp_path, engine):
    trail = AuditTrail(tmp_path, max_bytes=4000)
    trail.defer_human = True
    write(trail, engine, 12)
    trail.close()
    rotated = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("audit.jsonl."))
    assert rotated
    for name in rotated:
        human = tmp_path / name.replace("jsonl", "log")
        assert human.read_text().count("\n\n") == (tmp_path / name).read_text().count("\n")
    assert (tmp_path / "audit.log").read_text().count("\n\n") == (tmp_path / "audit.jsonl").read_text().count("\n")
