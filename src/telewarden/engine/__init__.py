"""The judgement: packs, schemas, detectors and the Engine that applies them to an Exchange.

Free of mitmproxy and of I/O on the per-message path; every adapter (proxy, ICAP, recordings)
builds an `Exchange` (model.py) and gets a `Verdict` back from `Engine.inspect` (judge.py).
"""
