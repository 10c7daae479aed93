"""Test-only addon: faults in the addon's hooks below the engine (tests/test_guarantees.py).

Loaded with `-s` next to telewarden's addon, in either order. Production code has no fault switch.

- `X-Fault-Inject: hosts`: the addon's `candidate_hosts` raises for this request (so `requestheaders`
  cannot tell whether the destination is claimed);
- `X-Fault-Inject: claim`: `Engine.claim` raises for this request's names;
- a file named FAIL-TRAIL in the proxy's working folder: every audit trail write fails, as on a full
  disk (the test creates and removes it).

mitmproxy loads telewarden's addon as a script module of its own, so `candidate_hosts` is replaced
in the globals its hooks see (found once the addons are loaded), not in telewarden.proxy.addon.
"""

from __future__ import annotations

import os

from mitmproxy import ctx

from telewarden.audit.trail import AuditError, AuditTrail
from telewarden.engine.judge import Engine

MARK = "fault-inject.invalid"  # a name no pack claims, added to a request's names to make claim raise
_claim = Engine.claim
_append = AuditTrail._append  # under write() and write_encoded() (records built by judge workers)


def _faulty_claim(self, hosts):
    if MARK in hosts:
        raise RuntimeError("injected fault in Engine.claim")
    return _claim(self, hosts)


def _faulty_append(self, rec, human):
    if os.path.exists("FAIL-TRAIL"):
        raise AuditError("injected fault: no space left on device")
    return _append(self, rec, human)


Engine.claim = _faulty_claim
AuditTrail._append = _faulty_append


class FaultHooks:
    def running(self) -> None:
        tw = ctx.master.addons.get("telewarden")
        assert tw is not None, "fault_hooks.py needs telewarden's addon loaded"
        scope = type(tw).requestheaders.__globals__
        original = scope["candidate_hosts"]
        if getattr(original, "faulty", False):
            return

        def candidate_hosts(flow, *args, **kwargs):
            what = flow.request.headers.get("x-fault-inject", "") if flow.request is not None else ""
            if what == "hosts":
                raise RuntimeError("injected fault in candidate_hosts")
            hosts = original(flow, *args, **kwargs)
            return (*hosts, MARK) if what == "claim" else hosts

        candidate_hosts.faulty = True
        scope["candidate_hosts"] = candidate_hosts


addons = [FaultHooks()]
