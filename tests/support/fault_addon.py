"""Test-only addon: make the engine raise on messages that carry the marker FAULT-INJECT.

It patches telewarden's Engine in the proxy process, to show that an internal error blocks in
the enforcing modes and forwards in audit mode. Production code has no fault switch.
"""

from telewarden.engine.judge import Engine

_original = Engine.inspect


def _inspect(self, ex, mode):
    if b"FAULT-INJECT" in ex.body:
        raise RuntimeError("injected fault")
    return _original(self, ex, mode)


Engine.inspect = _inspect
addons: list = []
