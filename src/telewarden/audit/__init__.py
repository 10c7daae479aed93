"""The trail: the hash-chained record of every decision (trail.py) and its human view (render.py)."""
