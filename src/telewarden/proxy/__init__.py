"""The live adapter: the mitmproxy addon, the guard below its HTTP hooks, `telewarden run`."""
