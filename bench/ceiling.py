"""Benchmark-only mitmproxy addon: how fast could telewarden be if a part of it cost nothing?

    ./tw bench proxy --proto https --telewarden-arg=-s --telewarden-arg=$PWD/bench/ceiling.py \
        --telewarden-arg=--set --telewarden-arg=ceiling=inspect

Load it after telewarden. `ceiling` names what becomes free (never use this outside a benchmark:
it forwards messages unjudged):
  inspect   Engine.inspect returns a prepared "forwarded, no finding" verdict (the trail, the
            Exchange, the annotation still run): the ratio no engine optimisation can beat;
  trail     as `inspect`, and nothing is recorded either (no audit.jsonl, no audit.log): with
            `inspect`, what the trail costs;
  judge     the request hook returns right after the claim (names and claim still run): what the
            proxy pays for being an addon that claims the flow and does nothing else;
  handover  with telewarden_workers: the workers are not asked; the hook awaits one turn of the event
            loop and gets a prepared "forwarded" verdict and record (the Exchange, the chained write
            and the annotation still run): with the real workers, what the hand-over itself costs.
The figures say how much of the gap to bare mitmdump each part could ever close.
"""

from __future__ import annotations

import logging
from typing import Any

from mitmproxy import ctx


class Ceiling:
    def load(self, loader: Any) -> None:
        loader.add_option("ceiling", str, "", "inspect | judge: the part that is made free (benchmark only)")

    def running(self) -> None:
        tw = ctx.master.addons.get("telewarden")
        what = ctx.options.ceiling
        if tw is None or not what:
            return
        namespace = type(tw).request.__globals__  # the script's module (not in sys.modules)
        Verdict, Decision = namespace["Verdict"], namespace["Decision"]
        if what in ("inspect", "trail"):
            engine = tw.engine

            def inspect(ex: Any, mode: Any) -> Any:
                pack = engine.claim(ex.hosts)
                return Verdict(ex.id, Decision.FORWARDED, mode, pack=pack.id if pack else None,
                               size_in=len(ex.body), size_out=len(ex.body))

            engine.inspect = inspect
            if what == "trail":
                tw._record = lambda *args: None
        elif what == "handover":
            import asyncio

            from telewarden.audit.render import block, record
            from telewarden.audit.trail import encode_record
            from telewarden.proxy.judge_client import Judged

            if tw.judges is None:
                raise ValueError("ceiling=handover needs telewarden_workers")
            canned: dict[str, Any] = {}

            async def judge(ex: Any, mode: Any, sink: bool, pack: str) -> Any:
                await asyncio.sleep(0)
                if not canned:
                    rec = record(Verdict(ex.id, Decision.FORWARDED, mode, pack=pack), ex)
                    canned["encoded"] = (encode_record(rec), block(rec))
                return (Judged(ex.id, Decision.FORWARDED, mode, pack, None, None, None, [], None, False, None),
                        canned["encoded"])

            tw.judges.judge = judge
        elif what == "judge":
            candidate_hosts = namespace["candidate_hosts"]

            def request(flow: Any) -> None:
                tw.engine.claim(candidate_hosts(flow, tw._asked.get(flow.server_conn.id)))

            tw.request = request
        else:
            raise ValueError(f"ceiling: unknown part {what!r}")
        logging.warning(f"ceiling: {what} made free; messages are NOT judged (benchmark only)")


addons = [Ceiling()]
