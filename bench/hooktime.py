"""Benchmark-only mitmproxy addon: CPU time spent in telewarden's hooks, against the process's.

    mitmdump -s src/telewarden/proxy/addon.py -s bench/hooktime.py   (bench/proxy.py --hooktime adds it)

Load it after telewarden. It wraps every hook of the telewarden addon and of its transport guard
with a thread-CPU-time counter and, every 0.2 s, writes the running totals (per hook, and the
process's user+system CPU at the same instant) as JSON to $TELEWARDEN_HOOKTIME. A reader takes two
snapshots around a measuring window: the share is d(hook ns) / d(process ns). Keys `part.*` are
parts inside the hooks (already counted in them); `after.*` runs outside the hooks (audit.log
rendered after forwarding) and is telewarden's too. Parts are timed only with
$TELEWARDEN_HOOKTIME_PARTS set: their wrappers (~0.5 us a call) are counted in the hooks' time. Garbage collection
is timed too (gc.callbacks), wherever it happens: it can also be loaded into a plain mitmdump. The wrapper's own
two clock reads (~0.2 us per hook call) are counted in the hooks, so the share errs high.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time

from mitmproxy import ctx

HOOKS = ("http_connect", "requestheaders", "request", "responseheaders", "response", "websocket_start",
         "websocket_message", "websocket_end", "server_connect", "server_disconnected", "client_connected",
         "client_disconnected", "tls_clienthello", "next_layer", "error")


class HookTime:
    def __init__(self) -> None:
        self.ns: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self._task = None
        self.gc_ns = 0
        self.gc_runs = [0, 0, 0]
        self._gc_t0 = 0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_t0 = time.thread_time_ns()
        else:
            self.gc_ns += time.thread_time_ns() - self._gc_t0
            self.gc_runs[info["generation"]] += 1

    def running(self) -> None:
        tw = ctx.master.addons.get("telewarden")
        if tw is not None and os.environ.get("TELEWARDEN_HOOKTIME_PARTS"):  # parts inside the hooks ("of which"), and the audit.log rendering after them
            namespace = type(tw).request.__globals__  # the script's module (not in sys.modules)
            for fn_name in ("candidate_hosts", "http_exchange", "websocket_exchange", "record"):
                fn = namespace.get(fn_name)
                if fn is not None and not getattr(fn, "_hooktime", False):
                    namespace[fn_name] = self._wrap(f"part.{fn_name}", fn)
            if tw.engine is not None:
                tw.engine.inspect = self._wrap("part.Engine.inspect", tw.engine.inspect)
            if tw.trail is not None:
                tw.trail.write = self._wrap("part.AuditTrail.write", tw.trail.write)
            for method in ("_annotate", "_record"):
                fn = getattr(tw, method, None)
                if fn is not None:
                    setattr(tw, method, self._wrap(f"part.{method}", fn))
        if tw is not None and tw.trail is not None and hasattr(tw.trail, "flush_human") and \
                not getattr(tw.trail.flush_human, "_hooktime", False):  # outside the hooks: always timed
            tw.trail.flush_human = self._wrap("after.AuditTrail.flush_human", tw.trail.flush_human)
        for name in ("telewarden", "telewarden_transport"):
            addon = ctx.master.addons.get(name)
            if addon is None:
                continue
            for hook in HOOKS:
                fn = getattr(addon, hook, None)
                if fn is not None and not getattr(fn, "_hooktime", False):
                    setattr(addon, hook, self._wrap(f"{name}.{hook}", fn))
        if self._task is None and os.environ.get("TELEWARDEN_HOOKTIME"):
            self._task = asyncio.get_running_loop().create_task(self._dump_forever(os.environ["TELEWARDEN_HOOKTIME"]))

    def _wrap(self, key: str, fn):
        ns, calls, clock = self.ns, self.calls, time.thread_time_ns
        ns[key] = calls[key] = 0

        def timed(*args):
            t0 = clock()
            try:
                return fn(*args)
            finally:
                ns[key] += clock() - t0
                calls[key] += 1

        timed._hooktime = True
        return timed

    async def _dump_forever(self, path: str) -> None:
        for _ in range(10_000_000):
            snap = {"process_ns": time.process_time_ns(), "ns": self.ns, "calls": self.calls,
                    "gc_ns": self.gc_ns, "gc_runs": self.gc_runs}
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(snap, f)
            os.replace(tmp, path)
            await asyncio.sleep(0.2)


addons = [HookTime()]
