"""Addon pieces below the proxy level (the live behaviour is in test_proxy.py)."""

from __future__ import annotations

from mitmproxy.test import tflow

from telewarden.proxy.addon import Telewarden
from telewarden.engine.model import Decision, Finding, Mode, Severity, Verdict


def verdict(decision: Decision, rule: str | None = None) -> Verdict:
    findings = [Finding(rule, "/x", "m", "p", Severity.HIGH)] if rule else []
    return Verdict("m1", decision, Mode.SCRUB, pack="hasura", kind="console-v2", findings=findings)


def test_annotations_of_a_long_lived_websocket_flow_stay_bounded():
    flow = tflow.twebsocketflow()
    for i in range(5000):
        Telewarden._annotate(flow, verdict(Decision.FORWARDED if i % 3 else Decision.SCRUBBED,
                                           None if i % 3 else "hasura.console.url-route"))
    meta = flow.metadata["telewarden"]
    assert meta["counts"] == {"scrubbed": 1667, "forwarded": 3333}
    assert len(meta["last"]) == 20 and meta["rules"] == ["hasura.console.url-route"]
    assert meta["decision"] == "scrubbed" and flow.marked == ":broom:"
    assert flow.comment == "telewarden: SCRUBBED (1667 scrubbed, 3333 forwarded) hasura.console.url-route"


def test_clean_flow_is_not_marked():
    flow = tflow.tflow()
    Telewarden._annotate(flow, verdict(Decision.FORWARDED))
    assert not flow.marked and flow.metadata["telewarden"]["decision"] == "forwarded"
